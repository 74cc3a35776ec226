"""The night on one page: what each stage did, what went live and why, and links that open (Prefect artifact
of the parent run; the stage subflows keep their own details)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from nightrec.ops import links
from nightrec.settings import Settings
from schemas.params import STAGES
from schemas.results import GateSummary, NightResult, Publication

METRICS = ("ndcg_at_10", "recall_at_10", "ndcg_at_20", "recall_at_20", "mrr", "coverage")


def _link(text: str, url: str | None) -> str:
    return f"[{text}]({url})" if url else text


def _docs(settings: Settings, gate: GateSummary | None) -> str | None:
    return _docs_url(settings, gate.data_docs if gate else None)


def _docs_url(settings: Settings, path: str | None) -> str | None:
    if not path:
        return None
    try:
        return links.data_docs(settings, path)
    except ValueError:  # Data Docs written somewhere else than this deployment's folder: no link that opens
        return None


def _gate_cell(settings: Settings, gate: GateSummary | None, experiment_id: str | None) -> str:
    if gate is None:
        return "not run"
    cells = [
        "passed" + (f", {len(gate.warnings)} warning(s)" if gate.warnings else ""),
        _link("Data Docs", _docs(settings, gate)),
    ]
    if gate.mlflow_run_id and experiment_id:
        cells.append(_link("MLflow", links.mlflow_run(settings, experiment_id, gate.mlflow_run_id)))
    return " · ".join(cells)


def stage_cells(settings: Settings, result: NightResult, experiment_id: str | None) -> dict[str, str]:
    """One line per stage of ``result``: its outcome, with links to where its details are."""
    r = result
    cells: dict[str, str] = {}
    cells["validate_raw"] = _gate_cell(settings, r.validate_raw, experiment_id)
    if r.build_features:
        f = r.build_features
        rows = f.rows.get("training_examples") or f.rows.get("interactions")
        cells["build_features"] = ("reused (inputs unchanged)" if f.skipped else "built") + (
            f", {rows:,} examples" if rows else ""
        )
    cells["validate_features"] = _gate_cell(settings, r.validate_features, experiment_id)
    for stage, model in (("train_retrieval", r.train_retrieval), ("train_ranking", r.train_ranking)):
        if model is not None:
            run = links.mlflow_run(settings, experiment_id, model.run_id) if experiment_id else None
            cells[stage] = " · ".join(
                (
                    f"{model.name} {_link(f'v{model.version}', links.mlflow_model_version(settings, model.name, model.version))}"
                    + (" (reused)" if model.reused else ""),
                    _link("MLflow run", run),
                )
            )
    if p := r.evaluate_and_promote:
        run = links.mlflow_run(settings, experiment_id, p.run_id) if experiment_id and p.run_id else None
        cells["evaluate_and_promote"] = (
            f"live policy **{p.policy.name}**: {p.reason} · {_link('MLflow run', run)}"
        )
    if pre := r.precompute:
        cells["precompute"] = (
            f"{pre.users:,} users, {pre.rows:,} rows, {pre.fallback_users:,} on cold-start lists"
            + (" (reused)" if pre.skipped else "")
        )
    cells["validate_recs"] = _gate_cell(settings, r.validate_recs, experiment_id)
    if r.validate_recs and r.validate_recs.report:
        ds = _date(result)
        cells["validate_recs"] += " · " + _link("night report", links.night_report(settings, ds))
    if pub := r.publish:
        state = f"live, generation {pub.generation}" if pub.live else "published, not live (a newer date is)"
        cells["publish"] = f"`{pub.manifest_key}`: {state}"
    return {stage: cells.get(stage, "not run") for stage in STAGES}


def _date(result: NightResult) -> date:
    return date.fromisoformat(result.run_date)


def markdown(
    settings: Settings,
    result: NightResult,
    experiment_id: str | None,
    *,
    failed: tuple[str, str] | None = None,
    failed_docs: str | None = None,
) -> str:
    """The parent run's page. ``failed`` = (stage, one-line reason) for a night that stopped, and
    ``failed_docs`` the Data Docs page of the gate that stopped it."""
    if failed:
        head = f"## Night {result.run_date}: **FAILED** at `{failed[0]}`; the live lists were not changed"
    elif result.publish and result.publish.live:
        head = f"## Night {result.run_date}: new lists live"
    else:
        head = f"## Night {result.run_date}: completed"
    lines = [head, ""]
    if failed:
        lines += [f"> {failed[1]}", ""]
        docs = _docs_url(settings, failed_docs)
        if docs:
            lines += [f"What the gate saw: {_link('Data Docs of the failed gate', docs)}.", ""]
        lines += ["Tracebacks: the failed stage's own flow run and its log.", ""]
    where = [f"Data Docs and night reports: {_link(settings.ui.pages_url, settings.ui.pages_url + '/')}"]
    if experiment_id:
        where.insert(
            0, f"MLflow: {_link('the experiment', links.mlflow_experiment(settings, experiment_id))}"
        )
    lines += [" · ".join(where), ""]
    lines += ["| # | stage | seconds | result |", "| ---: | --- | ---: | --- |"]
    cells = stage_cells(settings, result, experiment_id)
    for i, stage in enumerate(STAGES, 1):
        cell = cells[stage]
        if failed and stage == failed[0]:
            cell = f"**failed**: {failed[1]}"
        seconds = result.seconds.get(stage)
        cell = cell.replace("|", "\\|")  # a reason's own bars must not split the table's cells
        lines.append(f"| {i} | {stage} | {'' if seconds is None else f'{seconds:.1f}'} | {cell} |")
    if (p := result.evaluate_and_promote) and p.metrics:
        lines += ["", f"### Held-out metrics (the gate decides on {p.metric})", ""]
        lines += ["| lists | " + " | ".join(METRICS) + " |", "| --- |" + " ---: |" * len(METRICS)]
        for name, m in p.metrics.items():
            mark = " (live)" if name == p.policy.candidate else ""
            lines.append(
                f"| {name}{mark} | " + " | ".join(f"{m.get(c, float('nan')):.4f}" for c in METRICS) + " |"
            )
    channels = _channels(result)
    if channels:
        lines += [
            "",
            "### Channels (A/B)",
            "",
            "| channel | policy | state |",
            "| --- | --- | --- |",
            *channels,
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class ChannelState:
    """Where an extra channel (publish.channels) stands after a night."""

    channel: str
    policy: str
    published: Publication | None
    failed: str | None  # the first stage's reason; its live lists are then unchanged

    @property
    def state(self) -> str:
        if self.failed:
            return f"not published ({self.failed}); its live lists are unchanged"
        if self.published:
            key = self.published.manifest_key
            return (
                f"live at {key}" if self.published.live else f"published at {key}, not live (a newer date is)"
            )
        return "scored, not published"


def channel_states(result: NightResult) -> list[ChannelState]:
    made = result.precompute.channels if result.precompute else {}
    stages = (result.precompute, result.validate_recs, result.publish)
    # The first stage that failed a channel says why (the later ones only saw it had no lists).
    failed = {c: why for s in reversed(stages) if s is not None for c, why in s.failed_channels.items()}
    published = result.publish.channels if result.publish else {}
    return [
        ChannelState(
            channel,
            str(made[channel].policy.get("name")) if channel in made else "?",
            published.get(channel),
            failed.get(channel),
        )
        for channel in sorted({*made, *failed, *published})
    ]


def _channels(result: NightResult) -> list[str]:
    return [f"| {c.channel} | {c.policy} | {c.state} |" for c in channel_states(result)]
