"""The comparison table read back from a SQLite MLflow store, as the evaluate stage logs it."""

from __future__ import annotations

import math

import mlflow
import pytest

from nightrec.evaluation import compare


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    # One store for the module (creating a SQLite store costs ~2 s of migrations); one experiment per test.
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        yield f"sqlite:///{root}/mlflow.db", root
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def store(db, request):
    uri, root = db
    name = request.node.name[:60]
    exp = mlflow.create_experiment(name, artifact_location=(root / name).as_uri())
    return uri, exp, name


def _evaluate_run(exp: str, ds: str, sets: dict[str, float], promoted: bool, decision: str) -> str:
    """Logged the way ``promotion._log`` does: ``<set>.<metric>`` metrics, a decision tag, a promoted param."""
    with mlflow.start_run(
        experiment_id=exp, run_name=f"evaluate-{ds}", tags={"nightrec.stage": "evaluate", "nightrec.ds": ds}
    ) as run:
        mlflow.log_params({"promoted": promoted, "metric": "ndcg_at_10"})
        mlflow.set_tags({"decision": decision, "live_candidate": next(iter(sets))})
        flat = {
            f"{name}.{k}": base + i / 100
            for name, base in sets.items()
            for i, k in enumerate(("ndcg_at_10", "recall_at_20", "coverage", "mrr"))
        }
        mlflow.log_metrics(flat | {"lift_over_popularity": 0.5})
    return run.info.run_id


def test_latest_evaluations_lists_each_nights_metric_sets_newest_first(store):
    uri, exp, name = store
    _evaluate_run(exp, "2026-11-18", {"challenger": 0.1, "popularity": 0.05}, True, "first champion")
    with mlflow.start_run(experiment_id=exp, run_name="nightrec-ranking", tags={"nightrec.stage": "train"}):
        mlflow.log_metric("challenger.ndcg_at_10", 0.9)  # not an evaluate run: never listed
    second = _evaluate_run(
        exp, "2026-11-19", {"challenger": 0.2, "champion": 0.1, "popularity": 0.05, "ease": 0.15}, True, "won"
    )
    third = _evaluate_run(
        exp, "2026-11-20", {"challenger": 0.12, "champion": 0.2, "popularity": 0.05}, False, "worse"
    )

    table = compare.latest_evaluations(uri, name, n=2)

    assert list(table.columns) == list(compare.COLUMNS)
    assert table[["ds", "model"]].values.tolist() == [
        ["2026-11-20", "challenger"],
        ["2026-11-20", "champion"],
        ["2026-11-20", "popularity"],  # no EASE that night: no row
        ["2026-11-19", "challenger"],
        ["2026-11-19", "champion"],
        ["2026-11-19", "popularity"],
        ["2026-11-19", "ease"],
    ]
    row = table.iloc[0]
    assert row["run_id"] == third and not row["promoted"] and row["decision"] == "worse"
    assert (row["ndcg_at_10"], row["recall_at_20"], row["coverage"]) == pytest.approx((0.12, 0.13, 0.14))
    assert table.iloc[6]["ndcg_at_10"] == pytest.approx(0.15) and table.iloc[6]["run_id"] == second
    assert bool(table.iloc[3]["promoted"]) and "mrr" not in table.columns
    # Only the lists that went live were promoted, never the baselines measured beside them.
    assert table["promoted"].tolist() == [False, False, False, True, False, False, False]
    assert table["live"].tolist() == [True, False, False, True, False, False, False]  # each night's first set
    assert len(compare.latest_evaluations(uri, name, n=10)) == 9


def test_an_unknown_experiment_or_no_runs_gives_an_empty_table(store):
    uri, _, name = store
    assert compare.latest_evaluations(uri, "nope").empty
    empty = compare.latest_evaluations(uri, name)
    assert empty.empty and list(empty.columns) == list(compare.COLUMNS)


def test_a_partly_logged_set_keeps_its_missing_metrics_as_nan(store):
    uri, exp, name = store
    with mlflow.start_run(
        experiment_id=exp, run_name="evaluate-2026-11-21", tags={"nightrec.stage": "evaluate"}
    ):
        mlflow.log_metric("challenger.ndcg_at_10", 0.3)
    (row,) = compare.latest_evaluations(uri, name).to_dict("records")
    assert row["ds"] == "2026-11-21" and row["ndcg_at_10"] == 0.3 and math.isnan(row["coverage"])
    assert row["promoted"] is False and row["decision"] == ""
