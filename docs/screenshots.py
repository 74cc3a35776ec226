"""Screenshots of the pages people open after a few nights, for the README (headless Chromium).

    .venv/bin/python docs/screenshots.py [--home /tmp/nightrec-shots] [--out docs/img]

Three nights and the last one again stopped by its recommendations gate, on small generated data, through a local Prefect server
(with its UI), the MLflow UI and `nightrec pages`, as `nightrec serve` runs them; then one picture each of the
Prefect parent run's artifacts, MLflow's compare view of the three nights' two-tower runs, and the failed
validation in the Data Docs with its observed values. About ten minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nightrec.data import synthetic  # noqa: E402
from nightrec.ops.local_stack import local_stack  # noqa: E402

LAST = date(2026, 11, 22)


def shoot(url: str, out: Path, size: str = "1500,1000", wait_ms: int = 20000) -> None:
    """One full-window PNG of ``url`` once its scripts have run (virtual time: no fixed sleep)."""
    subprocess.run(
        [
            "chromium", "--headless=new", "--no-sandbox", "--hide-scrollbars", f"--window-size={size}",
            f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url,
        ],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    print(f"  {out} <- {url}")


def night(env: dict[str, str], raw: Path, ds: date, backfill: bool = False, force: bool = False) -> int:
    cmd = [sys.executable, "-m", "nightrec.cli", "run", "--data", str(raw), "--date", ds.isoformat()]
    cmd += (["--backfill"] if backfill else []) + (["--force"] if force else [])
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    print(f"night {ds}: exit {done.returncode}")
    return done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/nightrec-shots"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    shutil.rmtree(args.home, ignore_errors=True)
    home = args.home.resolve()
    raw = home / "raw"
    synthetic.generate(600, 200, 40, raw, seed=11, events_per_user=50.0)
    env_extra = {"NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "4", "NIGHTREC_TRAIN__RANKING_EPOCHS": "2"}
    with local_stack(home, ui=True, pools=[], extra_env=env_extra) as stack:
        from nightrec.settings import Settings

        os.environ["NIGHTREC_HOME"] = str(home)
        settings = Settings()
        pages = stack.start_pages(settings.ui.pages_port)
        mlflow_ui = stack.start_mlflow_ui(
            settings.ui.mlflow_port, settings.mlflow_tracking_uri, settings.mlflow_artifact_root
        )
        env = {**stack.env, "PREFECT_API_URL": stack.api_url}
        for ds in (LAST - timedelta(days=2), LAST - timedelta(days=1), LAST):
            assert night(env, raw, ds, backfill=ds != LAST) == 0, ds
        # The last night again, with a coverage bound its lists cannot meet: the recommendations gate stops it.
        strict = {**env, "NIGHTREC_GATES__MIN_CATALOG_COVERAGE": "0.99"}
        assert night(strict, raw, LAST, force=True) != 0

        args.out.mkdir(parents=True, exist_ok=True)
        runs = json.loads(
            stack.python(
                "-c",
                "import json; from prefect.client.orchestration import get_client\n"
                "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName\n"
                "from prefect.client.schemas.sorting import FlowRunSort\n"
                "with get_client(sync_client=True) as c:\n"
                "    rs = c.read_flow_runs(sort=FlowRunSort.START_TIME_DESC)\n"
                "    print(json.dumps([[str(r.id), r.name, r.state_name] for r in rs]))",
            )
        )
        parent = next(i for i, name, state in runs if name == f"nightly-{LAST}" and state == "Completed")
        artifact = stack.python(
            "-c",
            "from prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId\n"
            "from prefect.client.schemas.filters import ArtifactFilterKey\n"
            "with get_client(sync_client=True) as c:\n"
            "    f = ArtifactFilter(key=ArtifactFilterKey(any_=['night']),\n"
            f"        flow_run_id=ArtifactFilterFlowRunId(any_=['{parent}']))\n"
            "    print(c.read_artifacts(artifact_filter=f)[0].id)",
        ).strip()
        night_page = f"{stack.ui_url}/artifacts/artifact/{artifact}"
        shoot(night_page, args.out / "prefect-night-artifacts.png", size="1500,1500")
        shoot(f"{stack.ui_url}/runs/flow-run/{parent}", args.out / "prefect-night-run.png")

        import mlflow

        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        exp = mlflow.get_experiment_by_name(settings.mlflow_experiment)
        found = mlflow.search_runs(
            [exp.experiment_id],
            filter_string="tags.`nightrec.stage` = 'train_retrieval'",
            output_format="list",
        )
        ids = json.dumps([r.info.run_id for r in found][:3])
        compare = f"{mlflow_ui}/#/compare-runs?runs={urllib.parse.quote(ids)}"
        compare += f"&experiments={urllib.parse.quote(json.dumps([exp.experiment_id]))}"
        compare += "&workflowType=machine_learning"
        shoot(compare, args.out / "mlflow-compare-nights.png", size="1500,1400")
        shoot(
            f"{mlflow_ui}/#/experiments/{exp.experiment_id}?workflowType=machine_learning",
            args.out / "mlflow-nights.png",
        )

        pages_root = Path(settings.data_docs) / f"ds={LAST}" / "validations" / "recs_checks"
        target = max(pages_root.rglob("*.html"), key=lambda p: p.stat().st_mtime)  # the failed run's page
        rel = target.relative_to(settings.data_docs).as_posix()
        shoot(f"{pages}/data-docs/{rel}", args.out / "data-docs-failed-gate.png", size="1500,1100")
        shoot(f"{pages}/data-docs/index.html", args.out / "data-docs-index.png", size="1200,500")
    time.sleep(1)


if __name__ == "__main__":
    main()
