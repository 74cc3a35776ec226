"""The `nightrec` command: the one door in (it starts flows; nothing imports it)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nightrec.ops import library_env, run_log
from nightrec.settings import Settings
from schemas.results import CHALLENGER, CHAMPION, NightResult

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="nightrec: nightly recommendations, end to end."
)
# Piped into a log (CI, cron, `| tee`), rich would fit tables to 80 columns and cut the metric names.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120)

DEMO = {"users": 5000, "items": 2000, "days": 60, "events_per_user": 100.0}
_EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"


def _quiet_env(settings: Settings, verbose: bool) -> None:
    library_env.set_library_defaults(settings, verbose)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Output folder (events/, items/, users/).")],
    users: int = 5000,
    items: int = 2000,
    days: int = 60,
    events_per_user: float = 100.0,
    seed: int = 0,
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or jsonl")] = "parquet",
    profile: Annotated[
        str,
        typer.Option(
            help="default (impressions, clicks, carts, purchases), ratings (1-5 ratings only, late-1990s dates, "
            "sparse weeks, many one-day users), clicks (clicks only) or purchases (purchases only)."
        ),
    ] = "default",
) -> None:
    """Generate seeded synthetic data with planted structure (tastes, power-law popularity, drift)."""
    from nightrec.data import profiles

    try:
        s = profiles.generate(
            profile, users, items, days, out, seed=seed, events_per_user=events_per_user, fmt=fmt
        )
    except ValueError as e:
        console.print(f"[red]cannot generate:[/] {e}")
        raise typer.Exit(2) from None
    console.print(str(s), soft_wrap=True)


@app.command("import-movielens")
def import_movielens(src: Path, out: Path) -> None:
    """Convert a MovieLens folder (ml-100k, ml-1m or ml-latest layout) into the raw contract."""
    from nightrec.data import movielens

    console.print(str(movielens.import_movielens(src, out)), soft_wrap=True)


@app.command()
def run(
    data: Annotated[Path | None, typer.Option(help="Raw data folder (events/, items/, users/).")] = None,
    demo: Annotated[bool, typer.Option(help="Generate (once) and use the demo data set.")] = False,
    run_date: Annotated[
        str | None, typer.Option("--date", help="YYYY-MM-DD; default: day after newest event.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Rebuild features, retrain and rescore even if their inputs are unchanged.")
    ] = False,
    top_k: Annotated[int | None, typer.Option(help="List length (default from settings).")] = None,
    stages: Annotated[str | None, typer.Option(help="Comma-separated subset of stages.")] = None,
    backfill: Annotated[
        bool,
        typer.Option(
            help="A past --date on a log that goes on after it: later events are left out, not a failure."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Run the nightly pipeline in this process (every stage, with progress)."""
    settings = Settings()
    _quiet_env(settings, verbose)
    if data is None:
        data = Path(settings.raw_data)
        if demo and not (data / "events").exists():
            from nightrec.data import synthetic

            console.print(f"[cyan]generating demo data in {data} …[/]")
            synthetic.generate(
                DEMO["users"], DEMO["items"], DEMO["days"], data, events_per_user=DEMO["events_per_user"]
            )
        elif not (data / "events").exists():
            console.print(f"[red]no data at {data}[/]: pass --data PATH or --demo")
            raise typer.Exit(2)
    from pydantic import ValidationError

    from flows.nightly import nightly
    from schemas.params import NightlyParams

    try:
        params = NightlyParams(
            run_date=run_date,
            data=str(data.resolve()),
            force=force,
            backfill=backfill,
            top_k=top_k,
            stages=[s.strip() for s in stages.split(",")] if stages else None,
        )
    except ValidationError as e:
        console.print(f"[red]invalid option[/]: {e}")
        raise typer.Exit(2) from None
    from flows import progress

    log_path = run_log.path_for(settings.home, params.run_date)
    # Written first, so that a night killed at any point (even after its flip) shows as such in `status`.
    _write_last_run(
        settings,
        {"status": "running", "pid": os.getpid(), "run_date": params.run_date, "log": str(log_path)},
        finished=False,
    )
    try:
        # Libraries log to the night's file (Prefect's tracebacks, MLflow, the Spark JVM); the terminal gets the
        # progress lines, the summary and, on a failure, one message and where the tracebacks are.
        with run_log.capture(log_path, enabled=not verbose) as terminal:
            progress.to_stream(terminal)
            try:
                result = _run_nightly(nightly, params)
            except Exception:
                run_log.write_traceback(log_path)
                raise
            finally:
                progress.to_stream(None)
    except Exception as e:  # noqa: BLE001 - the CLI's job is to say what failed, plainly
        # A gate's full report (every rule, five rows each) is in the log and the Data Docs; the terminal
        # gets the first screen's worth.
        text = e.brief() if hasattr(e, "brief") else str(e)
        console.print(f"\n[bold red]nightly failed:[/] {type(e).__name__}: {text}", highlight=False)
        console.print("The live recommendations were not changed.")
        if not verbose:
            console.print(f"Tracebacks and library logs: {log_path}", soft_wrap=True)
        _write_last_run(
            settings,
            {
                "status": "failed",
                "run_date": params.run_date,
                "error": f"{type(e).__name__}: {e}"[:2000],
                "log": str(log_path),
            },
        )
        raise typer.Exit(1) from None
    _write_last_run(settings, {"status": "completed", **result.model_dump(mode="json"), "log": str(log_path)})
    _print_summary(settings, result, date_given=run_date is not None)
    if not verbose:
        console.print(f"[bold]Log:[/] {log_path}", soft_wrap=True)


def _run_nightly(nightly, params):
    try:
        return nightly(params)
    except RuntimeError as e:
        if _EPHEMERAL_TIMEOUT not in str(e):
            raise
        # The API never came up (a saturated machine): nothing ran yet, so one more try is safe.
        console.print("[yellow]Prefect's local API was slow to start; trying once more …[/]")
        return nightly(params)


def _write_last_run(settings: Settings, body: dict, finished: bool = True) -> None:
    from datetime import UTC, datetime

    from nightrec.io.lake import write_json

    path = Path(settings.home) / "last_run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat()
    stamp = {"finished_at": now} if finished else {"started_at": now}
    # Atomic: a kill while writing must not leave `status` an unreadable file.
    write_json(path, {**stamp, **body})


def _params(policy: dict) -> str:
    params = policy.get("params") or {}
    return "(" + ", ".join(f"{k} {v}" for k, v in params.items()) + ")" if params else ""


def _gate_notes(result: NightResult) -> list[str]:
    """What the gates noticed without failing (rows dropped, events after the run date, warnings)."""
    out = []
    for summary in (result.validate_raw, result.validate_features, result.validate_recs):
        if summary is not None:
            out += [*summary.notes, *summary.warnings]
    return out


def _channel_lines(result: NightResult) -> list[str]:
    """One line per extra channel (publish.channels): its policy and where it stands tonight."""
    from nightrec.ops.night_summary import channel_states

    return [
        f"  channel [bold]{c.channel}[/] ({c.policy}): " + (f"[red]{c.state}[/]" if c.failed else c.state)
        for c in channel_states(result)
    ]


def _print_summary(settings: Settings, result: NightResult, date_given: bool = True) -> None:
    if not date_given:
        console.print(
            f"run date {result.run_date}: the day after the newest event not stamped in the future "
            "(pass --date to choose one)"
        )
    if notes := _gate_notes(result):
        console.print("[bold]Notes:[/]")
        for note in notes[:8]:
            console.print(f"  • {note}", soft_wrap=True)
        if len(notes) > 8:
            console.print(f"  … and {len(notes) - 8} more in last_run.json")
    promo = result.evaluate_and_promote
    if promo is not None and promo.metrics:
        metrics = promo.metrics
        t = Table(title=f"Held-out metrics of the final lists ({result.run_date})")
        cols = ["ndcg_at_10", "recall_at_10", "ndcg_at_20", "recall_at_20", "mrr", "coverage"]
        t.add_column("lists", no_wrap=True)
        for c in cols:
            t.add_column(
                c.replace("_at_", "@").replace("ndcg", "NDCG").replace("recall", "Recall"), justify="right"
            )
        for name, m in metrics.items():
            t.add_row(name, *[f"{m.get(c, float('nan')):.4f}" for c in cols])
        console.print(t)
        metric, best = promo.metric, promo.best_baseline
        if CHALLENGER in metrics and best in metrics:
            ours, base = metrics[CHALLENGER][metric], metrics[best][metric]
            console.print(
                f"held-out {metric}: learned challenger {ours:.4f} vs the best baseline, {best}, {base:.4f} "
                f"([bold]{ours / max(base, 1e-12) - 1:+.0%}[/])"
            )
        console.print(f"promotion: [bold]{promo.reason}[/]")
    if promo is not None:
        console.print(f"live policy: [bold]{promo.policy.name}[/] {_params(promo.policy.model_dump())}")
    pub = result.publish
    if pub and not pub.live:
        console.print(
            f"\n[yellow]Snapshot published but not live[/] (a newer date is live): "
            f"{settings.store}/{pub.manifest_key}"
        )
    elif pub:
        console.print(f"\n[bold green]Live recommendations:[/] {settings.store}/{pub.manifest_key}")
        console.print(f"  users {pub.counts.get('users')}, fallback {pub.counts.get('fallback_users')}")
        console.print("  try: [bold]nightrec recs <USER_ID>[/]")
    for line in _channel_lines(result):
        console.print(line, soft_wrap=True)
    console.print(f"[bold]MLflow UI:[/] mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    console.print(f"[bold]Data Docs:[/] {Path(settings.data_docs) / 'index.html'}")
    if result.validate_recs is not None and result.validate_recs.report:
        console.print(f"[bold]Night report:[/] {result.validate_recs.report}  (nightrec report --open)")


@app.command()
def recs(
    user_id: str,
    channel: Annotated[
        str, typer.Option(help="The channel (an A/B variant's lists); default: default.")
    ] = "default",
) -> None:
    """Print the live list of one user (follows the live pointer only)."""
    from nightrec.publish.channels import open_channel
    from nightrec.publish.reader import LiveRecs

    settings = Settings()
    rows = LiveRecs(open_channel(settings.store, channel)).recs(user_id)
    if not rows:
        console.print(f"no recommendations for {user_id!r} in the live snapshot")
        raise typer.Exit(1)
    t = Table(title=f"recommendations for {user_id}")
    for c in ("rank", "item_id", "score", "source"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["rank"]), str(r["item_id"]), f"{r['score']:.4f}", str(r["source"]))
    console.print(t)


@app.command()
def report(
    date_: Annotated[
        str | None, typer.Option("--date", help="A run date (YYYY-MM-DD); default: the live snapshot's.")
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in the default browser.")] = False,
) -> None:
    """Show where the night report is (tonight's lists against the live ones, with charts)."""
    import webbrowser

    from nightrec.io import lake
    from nightrec.io.store import open_store
    from nightrec.publish import pointer, snapshot

    settings = Settings()
    if date_ is None:
        store = open_store(settings.store)
        live = pointer.read_live(store)
        if live is None:
            console.print("nothing is live yet: pass --date for the report of a night that did not publish")
            raise typer.Exit(1)
        manifest = snapshot.load_manifest(store, live[0].manifest_key)
        key = manifest.extra.get("report")
        if not key:
            console.print(
                f"the live snapshot {live[0].manifest_key} has no night report (published before them)"
            )
            raise typer.Exit(1)
        path = Path(settings.home) / "reports" / f"{manifest.ds}-generation-{manifest.generation}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get_bytes(key))
    else:
        try:
            day = date.fromisoformat(date_)
        except ValueError:
            console.print(f"[red]--date {date_!r} is not a date[/]: use YYYY-MM-DD")
            raise typer.Exit(2) from None
        path = lake.partition_path(settings.lake, "recs", day) / lake.NIGHT_REPORT
        if not path.exists():
            console.print(f"no night report for {day}: its lists were never validated ({path} is missing)")
            raise typer.Exit(1)
    console.print(f"night report: {path}")
    if open_:
        webbrowser.open(path.resolve().as_uri())


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Prefect API and UI port.")] = 4200,
    api_port: Annotated[
        int | None, typer.Option(help="Port of `nightrec api` beside it; default serve.port (8765).")
    ] = None,
    api: Annotated[bool, typer.Option(help="Serve the live lists over HTTP too.")] = True,
) -> None:
    """A local Prefect server with the UI, every deployment of prefect.yaml, a worker per pool, and the
    live lists over HTTP (`nightrec api`)."""
    import signal

    from nightrec.ops.local_stack import local_stack

    settings = Settings()
    # A SIGTERM must unwind the stack like Ctrl-C does, or the server and workers outlive us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console.print(f"starting Prefect on 127.0.0.1:{port} (logs in {Path(settings.home) / 'logs'}) …")
    with local_stack(Path(settings.home), port=port, ui=True) as stack:
        console.print(f"[bold green]Prefect UI:[/] {stack.ui_url}  (Deployments → nightly → Run)")
        console.print(f"  PREFECT_API_URL={stack.api_url}")
        if api:
            url = stack.start_api(api_port or settings.serve.port)
            console.print(
                f"[bold green]Lists API:[/] {url}/v1/recs/<user_id>  (ready once a night published)"
            )
        # Every link a night leaves (Prefect artifacts, the terminal) must open: the Data Docs and night
        # reports over HTTP, and an MLflow UI when the tracking store is not a server already.
        pages_url = stack.start_pages(settings.ui.pages_port)
        console.print(f"[bold green]Data Docs and night reports:[/] {pages_url}/")
        if not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
            mlflow_url = stack.start_mlflow_ui(
                settings.ui.mlflow_port, settings.mlflow_tracking_uri, settings.mlflow_artifact_root
            )
            console.print(f"[bold green]MLflow UI:[/] {mlflow_url}")
        console.print(stack.prefect("deployment", "ls"))
        console.print("workers are polling; Ctrl-C stops the server and the workers")
        try:
            while all(p.poll() is None for p in stack.processes):
                time.sleep(1)
            console.print("[red]a Prefect process exited[/]; see the logs above")
        except KeyboardInterrupt:
            console.print("stopping …")


@app.command()
def compare(nights: Annotated[int, typer.Option(help="How many evaluated nights to show.")] = 5) -> None:
    """Challenger, champion and baselines side by side for the latest nights, from MLflow."""
    from nightrec.evaluation.compare import latest_evaluations

    settings = Settings()
    _quiet_env(settings, False)
    df = latest_evaluations(settings.mlflow_tracking_uri, settings.mlflow_experiment, nights)
    if df.empty:
        console.print("no evaluated nights in MLflow yet: run `nightrec run` first")
        raise typer.Exit(1)
    t = Table(title=f"Held-out metrics, latest {nights} nights ({settings.mlflow_tracking_uri})")
    for c in ("ds", "lists", "NDCG@10", "Recall@20", "coverage", "went live"):
        t.add_column(c, justify="right" if c not in ("ds", "lists") else "left")
    for r in df.itertuples():
        t.add_row(
            str(r.ds),
            r.model,
            f"{r.ndcg_at_10:.4f}",
            f"{r.recall_at_20:.4f}",
            f"{r.coverage:.4f}",
            ("new" if r.promoted else "kept") if r.live else "",
        )
    console.print(t)
    console.print(
        "Side by side in the MLflow UI: Experiments → nightrec → select the evaluate-<date> runs → Compare."
    )


@app.command()
def rollback(
    to: Annotated[
        str | None, typer.Option(help="Manifest key to make live; default: the live pointer's previous.")
    ] = None,
    channel: Annotated[
        str, typer.Option(help="Roll back an A/B variant's channel instead (its pointer only).")
    ] = "default",
) -> None:
    """Move the live pointer back to an earlier snapshot (a conditional write, like every flip), make its
    policy the champion again, and reject the rolled-back lists so the next night does not bring them back."""
    from nightrec.errors import NightrecError
    from nightrec.ops import rollback as ops_rollback

    settings = Settings()
    _quiet_env(settings, False)
    try:
        done = ops_rollback.rollback(settings, to, channel)
    except NightrecError as e:
        console.print(f"[red]rollback refused:[/] {e}")
        raise typer.Exit(1) from None
    live = done.live
    where = "" if channel == "default" else f" of channel {channel}"
    console.print(f"live snapshot{where}: ds={live.ds} generation={live.generation} ({live.manifest_key})")
    if channel != "default":
        console.print(f"live policy: unchanged ({done.note})")
        return
    if done.restored:
        console.print(f"live policy: {done.restored} (champion again)")
    else:
        console.print("live policy: [yellow]unchanged[/] (the target snapshot records no policy version)")
    if done.rejected:
        console.print(f"rejected, never made live again by the gate: {', '.join(done.rejected)}")
    elif done.note:
        console.print(f"nothing rejected: {done.note}")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to bind; default serve.host (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default serve.port (8765).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes; default serve.workers.")] = None,
) -> None:
    """Serve the live lists over HTTP: GET /v1/recs/{user_id}?k=, /healthz, /readyz, /metrics.

    Follows the live pointer: each newly published snapshot is verified and swapped in without dropping a
    request; the previous one stays in memory for an instant rollback.
    """
    import uvicorn

    settings = Settings()
    _quiet_env(settings, False)
    host, port = host or settings.serve.host, port or settings.serve.port
    console.print(f"nightrec api on http://{host}:{port}/v1/recs/<user_id> (store {settings.store})")
    uvicorn.run(
        "nightrec.serving.app:from_settings",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.serve.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
    )


@app.command()
def pages(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port; default ui.pages_port (8766).")] = None,
) -> None:
    """Serve the Data Docs and the night reports over HTTP (the links in Prefect artifacts point here)."""
    import uvicorn

    settings = Settings()
    port = port or settings.ui.pages_port
    console.print(f"nightrec pages on http://{host}:{port}/ (Data Docs {settings.data_docs})")
    uvicorn.run(
        "nightrec.serving.pages:from_settings", factory=True, host=host, port=port, log_level="warning"
    )


@app.command("ab-report")
def ab_report(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    events: Annotated[str, typer.Option(help="Engagement events after the exposures (raw events contract).")],
    exposures: Annotated[
        str | None, typer.Option(help="Exposure log folder; default serve.exposure_log.")
    ] = None,
    horizon_hours: Annotated[float, typer.Option(help="How long after a list an engagement counts.")] = 24.0,
) -> None:
    """What an A/B experiment of `nightrec api` measured: CTR, conversion and NDCG per variant with 95%
    intervals, the difference to control, and a sample-ratio-mismatch check (a Prefect flow run with an
    artifact, and an HTML page with a chart)."""
    from pydantic import ValidationError

    from flows.ab_report import ab_report as ab_flow
    from nightrec.errors import NightrecError
    from schemas.params import AbReportParams

    settings = Settings()
    _quiet_env(settings, False)
    log_path = run_log.path_for(settings.home, None, kind="ab-report")
    try:
        params = AbReportParams(
            experiment=experiment, events=events, exposures=exposures, horizon_hours=horizon_hours
        )
        with run_log.capture(log_path):
            out = _run_nightly(ab_flow, params)
    except (ValidationError, ValueError, NightrecError) as e:
        run_log.write_traceback(log_path)
        console.print(f"[red]ab-report failed:[/] {str(e).splitlines()[0]}", soft_wrap=True)
        console.print(f"Tracebacks and library logs: {log_path}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(out.markdown, soft_wrap=True)
    console.print(f"report: {out.html}\nchart: {out.png}", soft_wrap=True)


@app.command()
def status() -> None:
    """The live snapshot, the champion models and the last run."""
    settings = Settings()
    _quiet_env(settings, False)
    from nightrec.io.store import open_store
    from nightrec.publish import pointer
    from nightrec.publish.channels import channel_names, open_channel

    store = open_store(settings.store)
    live = pointer.read_live(store)
    if live is None:
        console.print("live snapshot: [yellow]none yet[/]")
    else:
        p = live[0]
        console.print(f"live snapshot: ds={p.ds} generation={p.generation} run={p.run_id} ({p.manifest_key})")
    for name in channel_names(store):
        other = pointer.read_live(open_channel(settings.store, name))
        if other is not None:
            p = other[0]
            console.print(f"  channel {name}: ds={p.ds} generation={p.generation} run={p.run_id}")
    from nightrec import registry

    registry.connect(settings)
    from nightrec.scoring import policies

    live_policy = policies.champion()
    if live_policy is None:
        console.print("live policy: [yellow]none yet[/] (no night has reached evaluate_and_promote)")
    else:
        version = f" v{live_policy.version}" if live_policy.version else ""
        console.print(
            f"live policy: [bold]{live_policy.policy.name}[/] {_params(live_policy.policy.as_dict())}"
            f" ({policies.POLICY_MODEL}{version})"
        )
    for name in ("nightrec-retrieval", "nightrec-ranking"):
        console.print(f"{name}: champion v{registry.get_alias_version(name, CHAMPION)}")
    last = Path(settings.home) / "last_run.json"
    if not last.exists():
        console.print("last run: none")
        return
    run = json.loads(last.read_text())
    day = f"run date {run['run_date']}" if run.get("run_date") else "run date not chosen yet"
    if run.get("status") == "running":
        from nightrec.host import process_alive

        if process_alive(int(run.get("pid") or 0)):
            console.print(
                f"last run: [cyan]running[/] since {run.get('started_at')} ({day}, pid {run.get('pid')})"
            )
        else:
            console.print(
                f"last run: [red]died[/] after starting at {run.get('started_at')} ({day}): its process "
                f"{run.get('pid')} is gone (killed, or the machine restarted). The live snapshot above is "
                "what readers get; run the night again to resume it."
            )
        if run.get("log"):
            console.print(f"  log: {run['log']}", soft_wrap=True)
        return
    console.print(f"last run: {run.get('status')} at {run.get('finished_at')} ({day})")
    if run.get("error"):
        console.print(f"  error: {run['error']}")
    if seconds := run.get("seconds"):
        console.print("  stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()))
    if promo := run.get("evaluate_and_promote"):
        console.print(f"  promotion: {promo.get('reason')}")


stack_app = typer.Typer(
    no_args_is_help=True,
    help="The production shape on this machine: Postgres, SeaweedFS (S3), Prefect and MLflow servers, a Spark "
    "master and two workers, a Prefect worker per pool, the API (infra/compose.yaml's services, as processes).",
)
app.add_typer(stack_app, name="stack")
_STACK_HOME = typer.Option(
    envvar="NIGHTREC_STACK_HOME", help="The stack's home: its databases, S3 data, lake, logs and state."
)


@stack_app.command("up")
def stack_up(
    home: Annotated[Path, _STACK_HOME] = Path(".nightrec-stack"),
    raw: Annotated[
        Path | None, typer.Option(help="Raw data the nights read (compose's /data/raw); default <home>/raw.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE added to every process's environment (kept for restarts)."),
    ] = None,
) -> None:
    """Start every service that is not running (all of them the first time) and register the deployments."""
    from nightrec.ops.stack import Stack, StackError

    extra = dict(item.split("=", 1) for item in set_ or [])
    stack = Stack.open(home, raw=raw, extra_env=extra)
    try:
        stack.up(say=lambda line: console.print(f"  {line}"))
    except StackError as e:
        console.print(f"[red]stack up failed:[/] {e}")
        console.print(f"what is running stays up; `nightrec stack down --home {home}` stops it")
        raise typer.Exit(1) from None
    _print_stack(stack)
    console.print(
        f"[bold green]Prefect UI:[/] {stack.url('prefect-server')}   [bold green]MLflow:[/] {stack.url('mlflow')}"
        f"   [bold green]Spark:[/] {stack.spark_ui}"
    )
    console.print(f"  raw data: {stack.raw}  (run a night: Deployments -> validate-raw -> Run)")


@stack_app.command("down")
def stack_down(home: Annotated[Path, _STACK_HOME] = Path(".nightrec-stack")) -> None:
    """Stop every process of the stack (the data stays in its home)."""
    from nightrec.ops.stack import Stack

    stopped = Stack.open(home).down()
    console.print(f"stopped {len(stopped)} process(es): {', '.join(stopped) or 'none was running'}")


@stack_app.command("status")
def stack_status(home: Annotated[Path, _STACK_HOME] = Path(".nightrec-stack")) -> None:
    """Each service: running or stopped, its pid, its URL or log."""
    from nightrec.ops.stack import Stack

    stack = Stack.open(home)
    _print_stack(stack)
    if not all(state == "running" for _, state, _, _ in stack.status()):
        raise typer.Exit(1)


def _print_stack(stack) -> None:
    t = Table(title=f"nightrec stack ({stack.home})")
    for c in ("service", "state", "pid", "url / log"):
        t.add_column(c)
    for name, state, pid, where in stack.status():
        t.add_row(
            name, f"[green]{state}[/]" if state == "running" else f"[red]{state}[/]", str(pid or ""), where
        )
    console.print(t)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
