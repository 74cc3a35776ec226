"""`nightly`: every stage in one process (the monolith shape); each stage is also deployable alone."""

from __future__ import annotations

from prefect import flow

from flows import progress
from flows.build_features import build_features
from flows.evaluate_and_promote import evaluate_and_promote
from flows.naming import run_name
from flows.precompute import precompute
from flows.publish import publish
from flows.train_ranking import train_ranking
from flows.train_retrieval import train_retrieval
from flows.validate_features import validate_features
from flows.validate_raw import validate_raw
from flows.validate_recs import validate_recs
from nightrec import faults
from nightrec.ops.night_lock import night_lock
from schemas.params import STAGES, NightlyParams
from schemas.results import NightResult
from tasks import features, night
from tasks.channels import one_line
from tasks.context import run_id, settings_for


@flow(name="nightly", flow_run_name=run_name("nightly"), log_prints=True)
def nightly(params: NightlyParams = NightlyParams()) -> NightResult:
    """Validate, build features, train, evaluate and promote, precompute, validate and publish one night."""
    params = features.resolve_run_date(params)
    # One run per date at a time: a second one refuses here, naming the run that holds the date.
    with night_lock(settings_for(params).lake, params.run_date, run_id()):
        return _stages(params)


def _stages(params: NightlyParams) -> NightResult:
    selected = set(params.stages or STAGES)
    seconds: dict[str, float] = {}
    out: dict = {}
    current = ""

    def run(i: int, name: str, fn, *args):
        nonlocal current
        if name not in selected:
            progress.skipped(name, i, len(STAGES))
            return None
        current = name
        faults.fault("stage.before", target=name)  # the boundary: every earlier stage is done
        with progress.stage(name, i, len(STAGES), seconds):
            out[name] = fn(params, *args)
        return out[name]

    def partial() -> NightResult:
        return NightResult(run_date=params.run_date.isoformat(), seconds=seconds, **out)

    try:
        run(1, "validate_raw", validate_raw)
        run(2, "build_features", build_features)
        run(3, "validate_features", validate_features)
        features.release_spark(params)  # the Spark stages are done: their JVM's memory goes back
        retrieval = run(4, "train_retrieval", train_retrieval)
        ranking = run(5, "train_ranking", train_ranking)
        promotion = run(6, "evaluate_and_promote", evaluate_and_promote, retrieval, ranking)
        run(7, "precompute", precompute)
        run(8, "validate_recs", validate_recs)
        run(9, "publish", publish, promotion)
    except Exception as e:
        # The parent run says what stopped the night; return_state: this page must never mask the error.
        docs = getattr(e, "data_docs", None)  # a gate's failure names its Data Docs page
        night.failed(params, current, one_line(e), partial(), docs, return_state=True)
        raise
    result = partial()
    night.summarize(params, result, return_state=True)
    return result
