"""Online A/B experiments: which variant (a channel of published lists) a user is served.

Assignment is deterministic, as Optimizely and Statsig document it: a salted hash of the user id into
10,000 buckets. Two hashes, so the two knobs people turn mid-experiment do not reshuffle anyone:

- ``traffic`` (the share of users in the experiment) is a prefix of the first hash's buckets: raising it
  only adds users, lowering it only removes the last ones added; nobody changes variant;
- the variants split the second hash's buckets in declared order by ``weight``: changing weights moves only
  the users between the boundaries that moved (with two variants, just the ones who must switch).

An experiment file (YAML)::

    experiments:
      - name: ranker-vs-popular
        salt: 2026-12-ranker          # default: the name
        traffic: 0.2                  # share of all users in the experiment
        start: 2026-12-07T00:00:00Z   # optional window
        end: 2026-12-21T00:00:00Z
        variants:
          - {name: control, channel: default, weight: 1}
          - {name: popular, channel: challenger, weight: 1}
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nightrec.publish.channels import DEFAULT_CHANNEL, NAME

BUCKETS = 10_000


def bucket(salt: str, user_id: str) -> int:
    """The user's bucket in [0, 10000) under ``salt``: stable across processes, machines and restarts."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME)
    channel: str = Field(DEFAULT_CHANNEL, pattern=NAME, description="The line of published lists it serves.")
    weight: float = Field(
        1.0, gt=0, description="Its share of the experiment's users, relative to the others."
    )


class Experiment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME)
    salt: str | None = Field(
        None, description="Hash salt; default: the name. A new salt reshuffles everyone."
    )
    traffic: float = Field(1.0, ge=0.0, le=1.0, description="Share of all users in the experiment.")
    variants: list[Variant] = Field(min_length=1)
    start: datetime | None = None
    end: datetime | None = None

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name}: variant names repeat: {names}")
        if self.start and self.end and self.end <= self.start:
            raise ValueError(f"experiment {self.name}: end {self.end} is not after start {self.start}")
        return self

    @property
    def key(self) -> str:
        return self.salt or self.name

    def active(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        start = self.start and _aware(self.start)
        end = self.end and _aware(self.end)
        return (start is None or now >= start) and (end is None or now < end)

    def assign(self, user_id: str) -> Variant | None:
        """The user's variant, or None when the user is outside the experiment's traffic."""
        if bucket(self.key, user_id) >= round(self.traffic * BUCKETS):
            return None
        at = bucket(f"{self.key}:variant", user_id) / BUCKETS * sum(v.weight for v in self.variants)
        for v in self.variants:
            if at < v.weight:
                return v
            at -= v.weight
        return self.variants[-1]  # float rounding at the very top


class ExperimentFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiments: list[Experiment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ExperimentFile:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names repeat: {names}")
        return self

    @property
    def channels(self) -> set[str]:
        return {v.channel for e in self.experiments for v in e.variants}


def load_experiments(path: str | Path | None) -> ExperimentFile:
    """The experiments of a YAML file (none when ``path`` is None).

    Raises:
        ValueError: the file is missing, not YAML, or not a valid experiment list (names the field).
    """
    if path is None:
        return ExperimentFile()
    p = Path(path)
    if not p.exists():
        raise ValueError(f"experiment file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"experiment file {p} is not YAML: {e}") from e
    try:
        return ExperimentFile.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'file'}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        raise ValueError(f"experiment file {p}: {problems}") from None


def assign(
    experiments: ExperimentFile, user_id: str, now: datetime | None = None
) -> tuple[str, Variant] | None:
    """(experiment, variant) of the first active experiment that includes the user, or None."""
    for e in experiments.experiments:
        if e.active(now) and (v := e.assign(user_id)) is not None:
            return e.name, v
    return None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
