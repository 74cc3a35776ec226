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

import re
from typing import TYPE_CHECKING

from schemas.manifest import CHANNEL_NAME, DEFAULT_CHANNEL

if TYPE_CHECKING:  # settings validate channel maps through this module: it must import in no time
    from nightrec.scoring.policies import Policy

CHALLENGER = "challenger"
_POPULARITY = re.compile(r"^popularity_(?:(\d+)d|all)$")
SPECS = "'challenger', 'popularity_<N>d', 'popularity_all' or 'ease'"


class ChannelPolicyUnavailable(RuntimeError):
    """The channel's policy cannot be built tonight (no learned pair was ever trained)."""


def parse(spec: str) -> Policy | None:
    """A baseline ``spec`` as a Policy; None for ``challenger`` (resolved in the registry at scoring time).

    Raises:
        ValueError: ``spec`` names no policy.
    """
    from nightrec.scoring import ease
    from nightrec.scoring.policies import Policy

    check_spec(spec)
    if spec == CHALLENGER:
        return None
    m = _POPULARITY.match(spec)
    if m:
        return Policy("popularity", {"window_days": int(m.group(1) or 0)})
    return Policy("ease", {"l2": ease.DEFAULT_L2})


def check_spec(spec: str) -> None:
    if spec not in (CHALLENGER, "ease") and not _POPULARITY.match(spec):
        raise ValueError(f"unknown channel policy {spec!r}: one of {SPECS}")


def check_channels(channels: dict[str, str]) -> None:
    """Refuse a channel map that could not be scored: bad names, the default channel, unknown policies."""
    for channel, spec in channels.items():
        if channel == DEFAULT_CHANNEL:
            raise ValueError(
                "publish.channels: 'default' always serves the live policy (the promotion gate's choice); "
                "name the extra channel something else"
            )
        if not re.match(CHANNEL_NAME, channel):
            raise ValueError(
                f"publish.channels: invalid channel name {channel!r}: letters, digits, '_', '.', '-' (64 at most)"
            )
        try:
            check_spec(spec)
        except ValueError as e:
            raise ValueError(f"publish.channels.{channel}: {e}") from None


def resolve(spec: str) -> Policy:
    """The policy ``spec`` names tonight (the registry must be connected for ``challenger``).

    Raises:
        ChannelPolicyUnavailable: ``challenger`` with no learned pair in the registry.
    """
    policy = parse(spec)
    if policy is not None:
        return policy
    from nightrec import registry
    from nightrec.scoring.policies import Policy
    from schemas.results import RANKING, RETRIEVAL

    r = registry.get_alias_version(RETRIEVAL, CHALLENGER)
    k = registry.get_alias_version(RANKING, CHALLENGER)
    if r is None or k is None:
        raise ChannelPolicyUnavailable(
            f"channel policy 'challenger' needs tonight's learned pair, but {RETRIEVAL!r} or {RANKING!r} has no "
            "'challenger' alias: run train_retrieval and train_ranking first"
        )
    return Policy.learned(r, k, registry.serving_version(RETRIEVAL, r))
