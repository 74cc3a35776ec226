"""The promotion gate: the challenger pair replaces the champion pair only when it wins offline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import mlflow
from mlflow import MlflowClient

from nightrec.evaluation import ease, offline
from nightrec.settings import Settings
from nightrec.training import tracking
from nightrec.training.stages import RANKING, RETRIEVAL


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    challenger: dict, champion: dict | None, popularity: dict, metric: str, tolerance: float
) -> Decision:
    """Promote iff the challenger beats popularity and is at least the champion's score minus the tolerance.

    Example:
        >>> decide({"m": 0.3}, {"m": 0.31}, {"m": 0.1}, "m", 0.02).promote
        True
    """
    c, p = challenger[metric], popularity[metric]
    if c <= p:
        return Decision(False, f"challenger {metric}={c:.4f} does not beat popularity {p:.4f}")
    if champion is None:
        return Decision(True, f"first champion: {metric}={c:.4f} beats popularity {p:.4f}")
    h = champion[metric]
    if c >= h - tolerance:
        return Decision(True, f"challenger {metric}={c:.4f} >= champion {h:.4f} - tolerance {tolerance}")
    return Decision(False, f"challenger {metric}={c:.4f} < champion {h:.4f} - tolerance {tolerance}")


def _load(name: str, version: str | int):
    return mlflow.pytorch.load_model(f"models:/{name}/{version}", map_location="cpu")


def evaluate_and_promote(
    settings: Settings, ds: date, retrieval: dict | None, ranking: dict | None, tags: dict[str, str]
) -> dict:
    """Evaluate challenger, champion, popularity and EASE on the held-out window, then apply the gate.

    EASE is reported beside the others (where the catalog allows its dense inverse); the gate itself stays
    challenger vs champion and popularity.

    ``retrieval``/``ranking`` are the training stages' model references; without them the registry's
    ``challenger`` aliases are used (separate deployments).
    """
    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    ch_r = str(retrieval["version"]) if retrieval else tracking.get_alias_version(RETRIEVAL, "challenger")
    ch_k = str(ranking["version"]) if ranking else tracking.get_alias_version(RANKING, "challenger")
    if ch_r is None or ch_k is None:
        raise RuntimeError("no challenger models registered: run train-retrieval and train-ranking first")
    champ_r = tracking.get_alias_version(RETRIEVAL, "champion")
    champ_k = tracking.get_alias_version(RANKING, "champion")
    data = offline.load_eval_data(settings, ds)
    ks = settings.promotion.k_eval
    results: dict[str, dict] = {}
    challenger_models = (_load(RETRIEVAL, ch_r), _load(RANKING, ch_k))
    results["challenger"] = offline.evaluate_models(settings, ds, data, *challenger_models)
    no_rerank = settings.model_copy(deep=True)
    no_rerank.scoring.rerank_weight = 0.0
    results["challenger_retrieval_only"] = offline.evaluate_models(
        no_rerank, ds, data, challenger_models[0], None
    )
    if champ_r is not None and champ_k is not None:
        results["champion"] = offline.evaluate_models(
            settings, ds, data, _load(RETRIEVAL, champ_r), _load(RANKING, champ_k)
        )
    results["popularity"] = offline.evaluate(offline.popularity_lists(data, max(ks)), data, ks)
    if len(data.items) <= ease.MAX_ITEMS:
        results["ease"] = offline.evaluate(offline.ease_lists(data, max(ks), ease.DEFAULT_L2), data, ks)
    metric = settings.promotion.metric
    decision = decide(
        results["challenger"],
        results.get("champion"),
        results["popularity"],
        metric,
        settings.promotion.tolerance,
    )
    if decision.promote:
        tracking.set_alias(RETRIEVAL, "champion", ch_r)
        tracking.set_alias(RANKING, "champion", ch_k)
    lift = results["challenger"][metric] / max(results["popularity"][metric], 1e-12) - 1.0
    _log(
        settings,
        ds,
        results,
        decision,
        lift,
        tags,
        {"retrieval": ch_r, "ranking": ch_k},
        (champ_r, champ_k),
        retrieval,
    )
    return {
        "promoted": decision.promote,
        "reason": decision.reason,
        "metric": metric,
        "lift_over_popularity": lift,
        "metrics": results,
        "challenger": {"retrieval": ch_r, "ranking": ch_k},
        "previous_champion": {"retrieval": champ_r, "ranking": champ_k},
        "champion": {
            "retrieval": tracking.get_alias_version(RETRIEVAL, "champion"),
            "ranking": tracking.get_alias_version(RANKING, "champion"),
        },
    }


def _log(settings, ds, results, decision, lift, tags, challenger, previous, retrieval_ref) -> None:
    with mlflow.start_run(
        run_name=f"evaluate-{ds}", tags={"nightrec.stage": "evaluate", "nightrec.ds": str(ds), **tags}
    ):
        mlflow.log_params(
            {
                "promoted": decision.promote,
                "metric": settings.promotion.metric,
                "tolerance": settings.promotion.tolerance,
                "challenger_retrieval": challenger["retrieval"],
                "challenger_ranking": challenger["ranking"],
                "previous_champion_retrieval": previous[0],
                "previous_champion_ranking": previous[1],
            }
        )
        mlflow.set_tag("decision", decision.reason)
        flat = {f"{name}.{k}": v for name, m in results.items() for k, v in m.items()}
        mlflow.log_metrics(flat | {"lift_over_popularity": lift})
        mlflow.log_dict({"decision": decision.reason, "metrics": results}, "evaluation.json")
    # The same figures on the challenger's training run, so the MLflow comparison view shows them side by side.
    if retrieval_ref and retrieval_ref.get("run_id"):
        client = MlflowClient()
        for k, v in results["challenger"].items():
            client.log_metric(retrieval_ref["run_id"], f"heldout_{k}", v)
