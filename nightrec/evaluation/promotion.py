"""The promotion gate: the best measured policy goes live, and the live one moves only on a measured win.

Candidates are tonight's learned pair (challenger), the live learned pair (champion) and baselines refit on the
night's data: item popularity over several windows and EASE with its L2 chosen on the validation window. Each
makes full lists through the production scorer for the same held-out users, so per-user metrics pair up:
a candidate replaces the live policy only when a paired bootstrap interval of the difference lies above 0.
A first night has no live policy: the strongest baseline stands in for it, so a learned policy goes live only
when it beats every baseline. Whatever wins, something goes live.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from nightrec import faults, registry
from nightrec.errors import NightrecError
from nightrec.evaluation import offline, slices
from nightrec.evaluation.paired import Comparison, paired_bootstrap
from nightrec.io import lake, vocab_identity
from nightrec.scoring import ease, policies
from nightrec.scoring.policies import LivePolicy, Policy
from nightrec.settings import PromotionSettings, Settings
from schemas.results import CHALLENGER, CHAMPION, RANKING, RETRIEVAL, ChosenPolicy, ModelTrained, Promotion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """Which candidate is live after tonight, and why.

    Attributes:
        live: the candidate whose policy is live after tonight.
        promote: whether that is a change (a first champion counts as one).
        reason: one sentence, with the figures it was decided on.
        comparisons: candidate -> its paired comparison with the reference (the live policy, or on a first
            night the strongest baseline).
    """

    live: str
    promote: bool
    reason: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)


def decide(
    per_user: dict[str, np.ndarray],
    candidates: dict[str, Policy],
    incumbent: str | None,
    cfg: PromotionSettings,
    seed: int = 0,
) -> Decision:
    """Pick the live policy from per-user values of ``cfg.metric`` (same users, same order, for every name).

    Args:
        per_user: candidate name -> float [n] per-user metric.
        candidates: candidate name -> its policy (every key of ``per_user`` that may go live).
        incumbent: the candidate that is live now (None on a first night).
        cfg: the promotion settings (confidence, bootstrap samples, minimum users, tolerance).

    Returns:
        The decision. With no incumbent, the strongest baseline is the reference and goes live unless a learned
        candidate beats it; below ``cfg.min_eval_users`` no interval is trusted: the incumbent stays, or on a
        first night the strongest baseline goes live.
    """
    metric = cfg.metric
    means = {name: float(per_user[name].mean()) if len(per_user[name]) else 0.0 for name in candidates}
    n = len(next(iter(per_user.values()))) if per_user else 0
    baseline_names = [c for c in candidates if candidates[c].is_baseline]
    first = incumbent is None
    if first:
        if not baseline_names:
            best = max(candidates, key=means.get)
            return Decision(
                best, True, f"first champion: {best} ({metric}={means[best]:.4f}), the only candidate"
            )
        # Ties go to the earlier-listed baseline: the candidates dict is in a stable order.
        reference = max(baseline_names, key=lambda c: (means[c], -baseline_names.index(c)))
    else:
        reference = incumbent
    if n < cfg.min_eval_users:
        what = f"the strongest baseline {reference} goes live" if first else f"{reference} stays live"
        return Decision(
            reference,
            first,
            f"only {n} evaluation users (< promotion.min_eval_users={cfg.min_eval_users}): {what} "
            f"({metric}={means[reference]:.4f}) without a comparison",
        )
    comps = {
        c: paired_bootstrap(per_user[c], per_user[reference], cfg.confidence, cfg.bootstrap_samples, seed)
        for c in candidates
        if c != reference
    }
    winners = [c for c, cmp in comps.items() if cmp.a_wins]
    if winners:
        best = max(winners, key=means.get)
        verb = "first champion" if first else "promoted"
        return Decision(
            best,
            True,
            f"{verb}: {best} {metric}={means[best]:.4f} beats {reference} {means[reference]:.4f} "
            f"({comps[best].describe()})",
            comps,
        )
    # Tonight's retrained learned pair replaces the live learned pair unless it is worse: fresher weights at
    # an equal measured quality are the better bet. (Baselines are refit every night anyway; another window
    # or weight is another policy, which has to win.)
    fresh = [
        c
        for c, cmp in comps.items()
        if not first
        and candidates[reference].kind == "learned"
        and candidates[c].kind == "learned"
        and candidates[c] != candidates[reference]
        and cmp.diff >= -cfg.tolerance
    ]
    if fresh:
        best = max(fresh, key=means.get)
        return Decision(
            best,
            True,
            f"refreshed: {best} {metric}={means[best]:.4f} is not worse than {reference} "
            f"{means[reference]:.4f} beyond the tolerance {cfg.tolerance} ({comps[best].describe()})",
            comps,
        )
    runner_up = max(comps, key=means.get) if comps else None
    against = f"; best other: {runner_up} ({comps[runner_up].describe()})" if runner_up else ""
    what = "first champion: the strongest baseline" if first else "kept"
    return Decision(
        reference,
        first,
        f"{what} {reference} ({metric}={means[reference]:.4f}): no candidate beats it at "
        f"{cfg.confidence:.0%}{against}",
        comps,
    )


def _load(settings: Settings, ds: date, name: str, version: str | int):
    """A registered model, refused when the night's vocabulary does not keep its indices."""
    model = registry.load_version(name, version)
    vocab_identity.check_model(model, settings.lake, ds, f"{name} version {version}")
    return model


def _challenger_versions(
    retrieval: ModelTrained | None, ranking: ModelTrained | None
) -> tuple[str | None, str | None]:
    r = retrieval.version if retrieval else registry.get_alias_version(RETRIEVAL, CHALLENGER)
    k = ranking.version if ranking else registry.get_alias_version(RANKING, CHALLENGER)
    return r, k


def measure_candidates(
    settings: Settings, ds: date, challenger: Policy | None, live: LivePolicy | None, data: offline.EvalData
) -> tuple[dict[str, offline.Measured], dict[str, Policy], str | None, dict]:
    """Every candidate's held-out metrics. Returns (measured, candidates, incumbent, extra info)."""
    measured: dict[str, offline.Measured] = {}
    candidates: dict[str, Policy] = {}
    info: dict = {}
    if challenger is not None:
        models = (
            _load(settings, ds, RETRIEVAL, challenger.params["retrieval"]),
            _load(settings, ds, RANKING, challenger.params["ranking"]),
        )
        # The same candidates with and without the ranker: what re-ranking adds, at one retrieval pass.
        measured[CHALLENGER], measured["challenger_retrieval_only"] = offline.measure_each(
            settings, data, *models, [None, 0.0]
        )
        candidates[CHALLENGER] = challenger
    p = settings.promotion
    for w in p.popularity_windows:
        policy = Policy("popularity", {"window_days": int(w)})
        measured[policy.name] = offline.measure_baseline(settings, ds, data, policy)
        candidates[policy.name] = policy
    if p.ease:
        # A catalog past ease_max_items: EASE over its most engaged items (named in the policy's params).
        top = p.ease_max_items if len(data.items) > p.ease_max_items else None
        curve = offline.tune_ease(
            settings, ds, p.ease_l2_grid, p.ease_recency_grid, p.ease_recency_days, max_items=top
        )
        l2, w = max(curve, key=curve.get) if curve else (ease.DEFAULT_L2, 0.0)
        info["ease_validation"] = {f"l2={a:g} recency={b:g}": v for (a, b), v in curve.items()}
        params = {"l2": l2} | ({"recency_weight": w, "recency_days": p.ease_recency_days} if w else {})
        params |= {"max_items": top} if top else {}
        policy = Policy("ease", params)
        measured[policy.name] = offline.measure_baseline(settings, ds, data, policy)
        candidates[policy.name] = policy
    incumbent = None
    if live is not None:
        incumbent = next((c for c, pol in candidates.items() if pol == live.policy), None)
        if incumbent is None:  # the live policy is not among tonight's candidates: measure it as it is
            if live.policy.kind == "learned":
                models = (
                    _load(settings, ds, RETRIEVAL, live.policy.params["retrieval"]),
                    _load(settings, ds, RANKING, live.policy.params["ranking"]),
                )
                measured[CHAMPION] = offline.measure(settings, ds, data, *models)
            else:
                measured[CHAMPION] = offline.measure_baseline(settings, ds, data, live.policy)
            candidates[CHAMPION] = live.policy
            incumbent = CHAMPION
    return measured, candidates, incumbent, info


def evaluate_and_promote(
    settings: Settings,
    ds: date,
    retrieval: ModelTrained | None,
    ranking: ModelTrained | None,
    tags: dict[str, str],
) -> Promotion:
    """Measure every candidate policy on the held-out window, decide, and record the live policy in MLflow.

    ``retrieval``/``ranking`` are the training stages' model references; without them the registry's
    ``challenger`` aliases are used (separate deployments); with neither, only the baselines and the live
    policy compete.
    """
    registry.connect(settings)
    ch_r, ch_k = _challenger_versions(retrieval, ranking)
    challenger = (
        Policy.learned(ch_r, ch_k, registry.serving_version(RETRIEVAL, ch_r))
        if ch_r is not None and ch_k is not None
        else None
    )
    live = policies.champion()
    data = offline.load_eval_data(settings, ds)
    measured, candidates, incumbent, info = measure_candidates(settings, ds, challenger, live, data)
    # Lists an operator rolled back never go live again: the same models, or the same baseline on this date.
    rejected = policies.rejected(candidates, ds.isoformat())
    if rejected:
        log.warning("not candidates tonight, their lists were rolled back: %s", ", ".join(rejected))
        candidates = {c: pol for c, pol in candidates.items() if c not in rejected}
        incumbent = None if incumbent in rejected else incumbent
        info["rejected"] = rejected
        if not candidates:
            raise NightrecError(
                f"every candidate policy of {ds} made lists that were rolled back ({', '.join(rejected)}); "
                "nothing may go live. Add a candidate (promotion.popularity_windows, promotion.ease) or "
                "retrain (`nightrec run --force`)"
            )
    metric = settings.promotion.metric
    per_user = {c: measured[c].per_user[metric] for c in candidates}
    decision = decide(per_user, candidates, incumbent, settings.promotion, seed=settings.train.seed)
    winner = candidates[decision.live]
    results = {name: m.metrics for name, m in measured.items()}
    best_baseline = max(
        (c for c in candidates if candidates[c].is_baseline), key=lambda c: results[c][metric], default=None
    )
    lift = (
        results[CHALLENGER][metric] / max(results[best_baseline][metric], 1e-12) - 1.0
        if CHALLENGER in results and best_baseline is not None
        else None
    )
    run_tags = {"nightrec.stage": "evaluate", "nightrec.ds": str(ds), **registry.process_tags(), **tags}
    with registry.run("evaluate", run_tags, ds=str(ds), note=_note(decision, winner, metric)) as run_id:
        registry.end_orphan_runs("evaluate", str(ds), resumed_by=run_id)
        _log(settings, results, decision, winner, lift, challenger, live, incumbent, info)
        _write_slices(settings, ds, measured[decision.live], data, winner.name)
        _link_inputs(settings, ds, challenger, live, data)
        version = live.version if live is not None and not decision.promote else None
        if decision.promote or (live is not None and live.version is None):
            # A registry from before policies gets its learned champion recorded as a policy version too.
            version = policies.register(winner, run_id, decision.reason)
            faults.fault("promotion.after_register")  # a policy version that is not (yet) the champion
            policies.promote(version)
    _annotate_challengers(challenger, results, metric, decision, str(ds))
    # The challenger's figures on its own training run too, so MLflow's comparison view shows them side by side.
    if retrieval and CHALLENGER in results:
        registry.log(
            metrics={f"heldout_{k}": v for k, v in results[CHALLENGER].items()}, run_id=retrieval.run_id
        )
    log.info("policy: %s (%s)", winner.name, decision.reason)
    return Promotion(
        promoted=decision.promote,
        reason=decision.reason,
        metric=metric,
        policy=ChosenPolicy(**winner.as_dict(), version=version, candidate=decision.live),
        best_baseline=best_baseline,
        lift_over_best_baseline=lift,
        metrics=results,
        comparisons={c: cmp.as_dict() for c, cmp in decision.comparisons.items()},
        incumbent=incumbent,
        challenger=challenger.params if challenger else {"retrieval": ch_r, "ranking": ch_k},
        previous_champion=live.policy.params if live and live.policy.kind == "learned" else {},
        previous_policy=live.policy.as_dict() if live else None,
        run_id=run_id,
        champion={
            "retrieval": registry.get_alias_version(RETRIEVAL, CHAMPION),
            "ranking": registry.get_alias_version(RANKING, CHAMPION),
        },
        **info,
    )


def _note(decision, winner: Policy, metric: str) -> str:
    return f"**Live policy: {winner.name}** ({decision.reason}). Decided on held-out `{metric}`."


def _link_inputs(
    settings: Settings, ds: date, challenger: Policy | None, live: LivePolicy | None, data: offline.EvalData
) -> None:
    """The evaluation run names what it judged: the model versions (its page links them) and the held-out
    window (a dataset input: where it lives, its users)."""
    versions = [
        (name, pol.params[key])
        for pol in (challenger, live.policy if live else None)
        if pol is not None and pol.kind == "learned"
        for name, key in ((RETRIEVAL, "retrieval"), (RANKING, "ranking"))
    ]
    registry.log_model_inputs(sorted(set(versions)))
    users = pd.DataFrame({"user_id": data.users.user_id[:5], "relevant_items": data.n_relevant[:5]})
    source = str(lake.partition_path(settings.lake, "interactions", ds))
    registry.log_dataset(f"holdout-{ds}", source, users, context="eval")


def _annotate_challengers(challenger: Policy | None, results: dict, metric: str, decision, ds: str) -> None:
    """Tonight's model versions carry the held-out figure and the gate's decision on the registry page."""
    if challenger is None or CHALLENGER not in results:
        return
    figure = results[CHALLENGER].get(metric)
    went_live = decision.promote and decision.live == CHALLENGER
    verdict = "promoted to champion" if went_live else "not promoted"
    for name, key in ((RETRIEVAL, "retrieval"), (RANKING, "ranking")):
        registry.annotate_version(
            name,
            challenger.params[key],
            {f"heldout_{metric}": f"{figure:.4f}", "decision": verdict, "nightrec.evaluated_ds": ds},
            f"Evaluated on the held-out window of {ds}: {metric} {figure:.4f} as the learned pair; "
            f"{verdict} ({decision.reason}).",
        )


def _write_slices(settings: Settings, ds: date, live: offline.Measured, data, policy: str) -> None:
    """The live policy's held-out figures by slice, for the night report (``lake.SLICES``)."""
    if live.lists is None or not len(live.lists):
        return
    report = slices.slice_report(live.lists, data, policy)
    path = lake.evaluation_path(settings.lake, ds) / lake.SLICES
    path.parent.mkdir(parents=True, exist_ok=True)
    lake.write_json(path, report.model_dump(mode="json"))
    registry.log(metrics={f"slice_gap.{cut}": gap for cut, gap in report.gaps.items()})


def _log(settings, results, decision, winner, lift, challenger, live, incumbent, info) -> None:
    p = settings.promotion
    registry.log(
        params={
            "promoted": decision.promote,
            "metric": p.metric,
            "tolerance": p.tolerance,
            "confidence": p.confidence,
            "min_eval_users": p.min_eval_users,
            "policy": winner.name,
            "policy_params": winner.key(),
            "incumbent": incumbent,
            "previous_policy": live.policy.name if live else None,
            "challenger_retrieval": challenger.params["retrieval"] if challenger else None,
            "challenger_ranking": challenger.params["ranking"] if challenger else None,
        },
        tags={"decision": decision.reason, "policy": winner.name, "live_candidate": decision.live},
    )
    flat = {f"{name}.{k}": v for name, m in results.items() for k, v in m.items()}
    for c, cmp in decision.comparisons.items():
        flat |= {f"{c}.diff_{p.metric}": cmp.diff, f"{c}.ci_low": cmp.low, f"{c}.ci_high": cmp.high}
    evaluation = {
        "decision": decision.reason,
        "live": decision.live,
        "policy": winner.as_dict(),
        "metrics": results,
        "comparisons": {c: cmp.as_dict() for c, cmp in decision.comparisons.items()},
        **info,
    }
    lifted = {"lift_over_best_baseline": lift} if lift is not None else {}
    registry.log(metrics=flat | lifted, documents={"evaluation.json": evaluation})
