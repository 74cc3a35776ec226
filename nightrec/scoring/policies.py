"""The serving policy: what makes tonight's lists, and the registry entry that says which one is live.

A policy is the learned pair (two-tower + DeepFM, by model versions) or a baseline that is refit on each
night's data: item popularity over a recent window, or EASE with a chosen L2 weight. The promotion gate picks
the best measured one; precompute writes that policy's lists. The live one is the ``champion`` alias of the
registered model ``nightrec-policy`` in MLflow, whose versions are small JSON documents logged by the
evaluation run that chose them, so the registry says what is live even when it is no model at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from nightrec import registry
from schemas.results import CHAMPION, RANKING, RETRIEVAL

POLICY_MODEL = "nightrec-policy"
Kind = Literal["learned", "popularity", "ease"]
KINDS: tuple[str, ...] = ("learned", "popularity", "ease")


@dataclass(frozen=True)
class Policy:
    """One way of making the lists.

    Attributes:
        kind: ``learned``, ``popularity`` or ``ease``.
        params: learned: ``{"retrieval": version, "ranking": version}`` (the versions the gate measured),
            plus ``serving_retrieval``: the two-tower's serving twin, where one was refit; popularity: ``{"window_days": w}``
            (0 = all history); ease: ``{"l2": weight}``, plus ``recency_weight`` and ``recency_days`` where
            recent popularity is blended in (named ``ease_recent`` then).
    """

    kind: Kind
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown policy kind {self.kind!r}: one of {', '.join(KINDS)}")

    @property
    def name(self) -> str:
        """The name it is reported under: ``learned``, ``popularity_30d``, ``popularity_all``, ``ease``."""
        if self.kind == "popularity":
            w = int(self.params.get("window_days", 0))
            return f"popularity_{w}d" if w else "popularity_all"
        if self.kind == "ease" and self.params.get("recency_weight"):
            return "ease_recent"
        return self.kind

    @property
    def is_baseline(self) -> bool:
        return self.kind != "learned"

    def key(self) -> str:
        """Stable text of kind and params (fingerprints, comparisons)."""
        return json.dumps({"kind": self.kind, "params": self.params}, sort_keys=True)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict) -> Policy:
        return cls(d["kind"], dict(d.get("params") or {}))

    @classmethod
    def learned(
        cls, retrieval: str | int, ranking: str | int, serving_retrieval: str | None = None
    ) -> Policy:
        params = {"retrieval": str(retrieval), "ranking": str(ranking)}
        return cls(
            "learned", params | ({"serving_retrieval": str(serving_retrieval)} if serving_retrieval else {})
        )

    def serving_versions(self) -> dict[str, str]:
        """A learned policy's {retrieval, ranking} versions that make the lists (the twin where there is one)."""
        p = self.params
        return {"retrieval": str(p.get("serving_retrieval") or p["retrieval"]), "ranking": str(p["ranking"])}


@dataclass(frozen=True)
class LivePolicy:
    policy: Policy
    version: str | None  # the nightrec-policy version; None for a champion from before policies existed


def register(policy: Policy, run_id: str, reason: str) -> str:
    """Record ``policy`` as a new version of ``nightrec-policy`` (from the active run ``run_id``)."""
    tags = {"kind": policy.kind, "name": policy.name, "params": json.dumps(policy.params, sort_keys=True)}
    version = registry.register_document(POLICY_MODEL, run_id, policy.as_dict(), "policy", tags, reason)
    return version


def promote(version: str) -> None:
    """Make ``nightrec-policy`` version ``version`` the champion; a learned one also moves the model aliases."""
    policy = policy_of(version)
    if policy.kind == "learned":
        registry.set_alias(RETRIEVAL, CHAMPION, policy.params["retrieval"])
        registry.set_alias(RANKING, CHAMPION, policy.params["ranking"])
    registry.set_alias(POLICY_MODEL, CHAMPION, version)


def policy_of(version: str) -> Policy:
    tags = registry.version_tags(POLICY_MODEL, version)
    return Policy(tags["kind"], json.loads(tags.get("params") or "{}"))


def champion() -> LivePolicy | None:
    """The live policy: the ``nightrec-policy`` champion, else (a registry from before policies) the learned
    champion pair, else None (nothing has been promoted yet)."""
    version = registry.get_alias_version(POLICY_MODEL, CHAMPION)
    if version is not None:
        return LivePolicy(policy_of(version), version)
    r = registry.get_alias_version(RETRIEVAL, CHAMPION)
    k = registry.get_alias_version(RANKING, CHAMPION)
    if r is not None and k is not None:
        return LivePolicy(Policy.learned(r, k), None)
    return None


REJECTED_TAG = "nightrec.rejected"


def _rejections(tags: dict) -> dict:
    return json.loads(tags.get(REJECTED_TAG) or "{}")


def reject(version: str, ds: str, reason: str) -> list[str]:
    """Mark the lists ``nightrec-policy`` version ``version`` made for run date ``ds`` as rolled back.

    A learned policy's models are rejected outright (their weights made those lists, whatever the night); a
    baseline is rejected for ``ds`` only, since on another night it is refit on other data and makes other
    lists. The gate never makes a rejected candidate live again (:func:`is_rejected`).

    Returns:
        What was marked, as ``name vN`` texts.
    """
    found = _rejections(registry.version_tags(POLICY_MODEL, version))
    found = {"ds": sorted({*found.get("ds", []), ds}), "reason": reason}
    registry.set_version_tag(POLICY_MODEL, version, REJECTED_TAG, json.dumps(found))
    marked = [f"{POLICY_MODEL} v{version} (run date {ds})"]
    policy = policy_of(version)
    if policy.kind == "learned":
        p = policy.params
        for name, v in (
            (RETRIEVAL, p["retrieval"]),
            (RETRIEVAL, p.get("serving_retrieval")),
            (RANKING, p["ranking"]),
        ):
            if v:
                registry.set_version_tag(name, v, REJECTED_TAG, json.dumps({"reason": reason}))
                marked.append(f"{name} v{v}")
    return marked


def rejected(candidates: dict[str, Policy], ds: str) -> list[str]:
    """The names of ``candidates`` whose lists were rolled back: a learned one's models, or a baseline with the
    same policy rejected for run date ``ds``. One registry search for all the baselines."""
    baselines: set[str] = set()
    if any(p.kind != "learned" for p in candidates.values()):
        baselines = {
            Policy(tags["kind"], json.loads(tags.get("params") or "{}")).key()
            for _, tags in registry.versions(POLICY_MODEL)
            if REJECTED_TAG in tags and ds in _rejections(tags).get("ds", [])
        }
    out = []
    for name, policy in candidates.items():
        if policy.kind == "learned":
            pairs = ((RETRIEVAL, policy.params["retrieval"]), (RANKING, policy.params["ranking"]))
            hit = any(REJECTED_TAG in registry.version_tags(n, v) for n, v in pairs)
        else:
            hit = policy.key() in baselines
        if hit:
            out.append(name)
    return sorted(out)


def is_rejected(policy: Policy, ds: str) -> bool:
    """Whether ``policy`` made lists that were rolled back (see :func:`rejected`)."""
    return bool(rejected({"policy": policy}, ds))
