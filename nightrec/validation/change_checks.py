"""The recs gate's rules on change: tonight's list figures against the median of the last successful nights.

A figure moving past its limit in its bad direction (coverage down; Gini, mean popularity, fallback share and
the share of replaced lists up) breaks its rule; the failure names the figure, its value, the baseline and the
threshold. Before any night succeeded there is no baseline, and the rules say so in the notes.
"""

from __future__ import annotations

import statistics

from nightrec.gate_settings import ChangeRule, ChangeSettings
from nightrec.validation.checks import Check

# Figure -> whether a rise is its bad direction; its rule is the ChangeSettings field of the same name.
FIGURES = {
    "coverage": False,
    "gini": True,
    "arp": True,
    "fallback_share": True,
    "replaced_share": True,
}


def _bound(median: float, rule: ChangeRule, rises: bool) -> tuple[float, str]:
    """The allowed bound and how it was set (for the message)."""
    if rule.scale == "absolute":
        step, how = rule.limit, f"{rule.limit:g}"
    elif rule.scale == "headroom" and rises:
        step, how = rule.limit * max(1.0 - median, 0.0), f"{rule.limit:.0%} of the room left to 1"
    else:
        step, how = median * rule.limit, f"{rule.limit:.0%} of it"
    if rises:
        return median + step, f"at most {median + step:.4g} (median + {how})"
    return max(median - step, 0.0), f"at least {max(median - step, 0.0):.4g} (median - {how})"


def change_checks(
    tonight: dict[str, float], past: list[dict[str, float]], cfg: ChangeSettings, policy: str | None = None
) -> tuple[list[Check], list[str]]:
    """Checks of ``tonight``'s figures against the median of ``past`` (each a night's figures, newest first,
    made by the same ``policy``).

    Returns:
        The checks, and notes for the figures without a baseline yet.
    """
    checks, notes = [], []
    for name, rises in FIGURES.items():
        rule: ChangeRule = getattr(cfg, name)
        if name not in tonight:
            continue
        history = [p[name] for p in past[: cfg.history_runs] if name in p]
        value = tonight[name]
        if not history:
            notes.append(
                f"change rule {name}: no successful night of policy {policy} to compare with yet "
                f"({value:.4g} tonight)"
            )
            continue
        median = statistics.median(history)
        bound, limit = _bound(median, rule, rises)
        checks.append(
            Check(
                f"change_{name}",
                value,
                None if rises else bound,
                bound if rises else None,
                rule.action,
                "recs",
                None,
                f"{name} {value:.4g} tonight against a median of {median:.4g} over the last {len(history)} "
                f"successful night(s) of policy {policy}; allowed {limit}, action {rule.action}",
            )
        )
    return checks, notes
