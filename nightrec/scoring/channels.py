"""The policies that make each channel's lists (``publish.channels``): an A/B variant's line of lists.

The default channel always carries the live policy (the promotion gate's choice). Another channel names the
policy it serves, so an experiment can put tonight's learned pair in front of users while a baseline is
champion, or the other way round:

- ``challenger``: tonight's learned pair (the registry's ``challenger`` aliases, with the two-tower's serving
  twin where one was refit), whether or not the gate promoted it;
- ``popularity_<N>d`` / ``popularity_all``: item popularity over the last N days / all history, refit nightly;
- ``ease``: EASE with the default L2 weight, refit nightly.
"""

from __future__ import annotations

from nightrec import registry
from nightrec.scoring import ease
from nightrec.scoring.policies import Policy
from nightrec.settings import CHALLENGER_SPEC, POPULARITY_SPEC, check_spec
from schemas.results import RANKING, RETRIEVAL

CHALLENGER = CHALLENGER_SPEC


class ChannelPolicyUnavailable(RuntimeError):
    """The channel's policy cannot be built tonight (no learned pair was ever trained)."""


def parse(spec: str) -> Policy | None:
    """A baseline ``spec`` as a Policy; None for ``challenger`` (resolved in the registry at scoring time).

    Raises:
        ValueError: ``spec`` names no policy.
    """
    check_spec(spec)
    if spec == CHALLENGER:
        return None
    m = POPULARITY_SPEC.match(spec)
    if m:
        return Policy("popularity", {"window_days": int(m.group(1) or 0)})
    return Policy("ease", {"l2": ease.DEFAULT_L2})


def resolve(spec: str) -> Policy:
    """The policy ``spec`` names tonight (the registry must be connected for ``challenger``).

    Raises:
        ChannelPolicyUnavailable: ``challenger`` with no learned pair in the registry.
    """
    policy = parse(spec)
    if policy is not None:
        return policy
    r = registry.get_alias_version(RETRIEVAL, CHALLENGER)
    k = registry.get_alias_version(RANKING, CHALLENGER)
    if r is None or k is None:
        raise ChannelPolicyUnavailable(
            f"channel policy 'challenger' needs tonight's learned pair, but {RETRIEVAL!r} or {RANKING!r} has no "
            "'challenger' alias: run train_retrieval and train_ranking first"
        )
    return Policy.learned(r, k, registry.serving_version(RETRIEVAL, r))
