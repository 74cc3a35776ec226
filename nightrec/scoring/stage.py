"""The precompute stage: champion models from the registry, every user scored, provenance written beside."""

from __future__ import annotations

import hashlib
import json
from datetime import date

from nightrec import faults, registry
from nightrec.io import lake, vocab_identity
from nightrec.scoring import channels, policies
from nightrec.scoring.policies import Policy
from nightrec.scoring.precompute import precompute
from nightrec.settings import Settings, for_channel
from schemas.results import RANKING, RETRIEVAL, Precomputed, ServingModel

META = "_META.json"  # a Precomputed, without ``skipped``


class NoLivePolicy(RuntimeError):
    """Nothing has been promoted yet, so there is no policy to score with."""


def model_refs(policy: Policy) -> dict[str, ServingModel]:
    """The models that make a learned policy's lists, by name (the two-tower's serving twin where it has
    one); {} for a baseline (it has none)."""
    if policy.kind != "learned":
        return {}
    refs = {}
    serving = policy.serving_versions()
    for name, key in ((RETRIEVAL, "retrieval"), (RANKING, "ranking")):
        version = serving[key]
        refs[name] = ServingModel(
            version=str(version),
            run_id=registry.run_of(name, version),
            evaluated_version=str(policy.params[key]),
        )
    return refs


def live_policy() -> policies.LivePolicy:
    """The policy to score with: the registry's champion.

    Raises:
        NoLivePolicy: no policy was ever promoted (evaluate-and-promote has not run for any night).
    """
    live = policies.champion()
    if live is None:
        raise NoLivePolicy(
            f"no live policy: registered model {policies.POLICY_MODEL!r} has no 'champion' alias, so nothing has "
            "been promoted yet. Run the evaluate_and_promote stage first (it always makes the best measured "
            "policy live, a baseline if no model beats it)"
        )
    return live


def precompute_with_champions(settings: Settings, ds: date, force: bool = False) -> Precomputed:
    """Score every user with the live policy and write ``recs`` for ``ds``, with provenance in ``_META.json``.

    A re-run for the same features, policy and scoring settings changes nothing and returns the earlier
    provenance (``skipped: true``): the lists already written may have been validated since, and rewriting
    them would drop that validation from under the publish stage. Event triggers are at-least-once, so a
    duplicate run is expected, not exceptional. ``force`` scores again regardless.
    """
    registry.connect(settings)
    live = live_policy()
    return _precompute(settings, ds, live.policy, live.version, force)


def precompute_channel(settings: Settings, ds: date, channel: str, force: bool = False) -> Precomputed:
    """Score every user with the policy ``publish.channels`` names for ``channel`` into that channel's
    lists (``settings.recs_table`` of :func:`nightrec.settings.for_channel`), as the default channel is."""
    registry.connect(settings)
    faults.fault("precompute.channel", target=channel)  # one channel's failure must leave the others alone
    policy = channels.resolve(settings.publish.channels[channel])
    return _precompute(for_channel(settings, channel), ds, policy, None, force)


def _precompute(
    settings: Settings, ds: date, policy: Policy, version: str | None, force: bool
) -> Precomputed:
    refs = model_refs(policy)
    features = lake.read_marker(lake.partition_path(settings.lake, "interactions", ds)) or {}
    fp = ":".join(
        (
            str(features.get("fingerprint")),
            hashlib.sha256(policy.key().encode()).hexdigest()[:16],
            hashlib.sha256(settings.scoring.model_dump_json().encode()).hexdigest()[:16],
        )
    )
    meta_path = lake.partition_path(settings.lake, settings.recs_table, ds) / META
    if not force and lake.is_complete(settings.lake, settings.recs_table, ds, fp) and meta_path.exists():
        return Precomputed(**json.loads(meta_path.read_text()), skipped=True)
    # A baseline has no models: precompute refits it on the night's lake.
    models = [registry.load_version(n, refs[n].version) for n in refs] if refs else [None, None]
    for name, model in zip(refs, models, strict=False):
        vocab_identity.check_model(model, settings.lake, ds, f"{name} version {refs[name].version}")
    summary = precompute(settings, ds, *models, fingerprint=fp, policy=policy)
    result = Precomputed(
        policy={**policy.as_dict(), "version": version},
        models=refs,
        input_fingerprints={"features": features.get("fingerprint")},
        channel=settings.channel,
        **summary.model_dump(),
    )
    # Atomic: a skip reads it back; publish copies its provenance into the manifest.
    lake.write_json(meta_path, result.model_dump(mode="json", exclude={"skipped"}))
    return result
