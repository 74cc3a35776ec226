"""The nightly model comparison read back from MLflow: what ``nightrec compare`` prints.

Each ``evaluate-<ds>`` run (``nightrec.evaluation.promotion``) logs one metric set per model as
``<set>.<metric>`` (``challenger.ndcg_at_10``, ``popularity.coverage``), the decision as the ``decision`` tag
and ``promoted`` as a param. This module only reads them, so it works against any tracking server and
never changes the active MLflow run or URI.
"""

from __future__ import annotations

import math

import pandas as pd

from nightrec import registry

SETS = ("challenger", "champion", "popularity", "ease")  # the order of the sets; popularity_7d etc. group
METRICS = ("ndcg_at_10", "recall_at_20", "coverage")
COLUMNS = ("ds", "run_id", "model", *METRICS, "live", "promoted", "decision")
_EVALUATE_RUNS = "tags.`nightrec.stage` = 'evaluate' AND attributes.run_name LIKE 'evaluate-%'"


def latest_evaluations(tracking_uri: str, experiment: str, n: int = 5) -> pd.DataFrame:
    """The metric sets and promotion decisions of the latest ``n`` evaluate runs, newest first.

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:///...``, ``http://...``).
        experiment: Experiment name.
        n: How many evaluate runs (nights) to show.

    Returns:
        One row per run and model set that the run evaluated (``challenger``, ``champion``, ``popularity``,
        ``ease``, in that order; a night without a champion, or a catalog too large for EASE, has no such
        row), with columns ``ds, run_id, model, ndcg_at_10, recall_at_20, coverage, promoted, decision``.
        Empty (same columns) when the experiment or its evaluate runs do not exist.
    """
    runs = registry.evaluate_runs(tracking_uri, experiment, _EVALUATE_RUNS, n) if n >= 1 else None
    if runs is None:
        return pd.DataFrame(columns=list(COLUMNS))
    rows = []
    for run in runs:
        m, tags, params = run.data.metrics, run.data.tags, run.data.params
        for model in _sets(m):
            values = {k: m.get(f"{model}.{k}", math.nan) for k in METRICS}
            if all(math.isnan(v) for v in values.values()):
                continue
            rows.append(
                {
                    "ds": tags.get("nightrec.ds", run.info.run_name.removeprefix("evaluate-")),
                    "run_id": run.info.run_id,
                    "model": model,
                    **values,
                    # The candidate whose lists went live that night (nights before policies: unknown).
                    "live": tags.get("live_candidate") == model,
                    # Only the row that went live was promoted; the run-level flag is about that one.
                    "promoted": tags.get("live_candidate") == model and params.get("promoted") == "True",
                    "decision": tags.get("decision", ""),
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _sets(metrics: dict[str, float]) -> list[str]:
    """The metric sets an evaluate run logged (``<set>.ndcg_at_10``), in SETS order, windows by name within."""
    names = {k.split(".", 1)[0] for k in metrics if k.endswith(".ndcg_at_10")}

    def order(name: str) -> tuple[int, str]:
        group = next((i for i, s in enumerate(SETS) if name == s or name.startswith(f"{s}_")), len(SETS))
        return group, "" if name in SETS else name

    return sorted(names, key=order)
