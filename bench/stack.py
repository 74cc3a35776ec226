"""The production shape against the monolith, on the same data: `nightrec stack` up, then the modular chain
(each stage its own deployment and worker, Spark on the standalone cluster, Prefect and MLflow on Postgres, S3
on SeaweedFS, training under torchrun when --processes > 1), against one `nightrec run` in one process on the
embedded default (local Spark, SQLite, a local store).

Usage: .venv/bin/python bench/stack.py [--users 5000] [--processes 2] [--home /tmp/nightrec-bench-stack]
Writes bench/results/stack.md (then run bench/collect.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightrec.data import synthetic  # noqa: E402
from nightrec.ops.stack import Stack  # noqa: E402
from schemas.params import STAGES  # noqa: E402

DS = dt.date(2026, 11, 22)


def _runs(api: str) -> list[dict]:
    body = json.dumps({"sort": "START_TIME_ASC", "limit": 200}).encode()
    req = urllib.request.Request(f"{api}/flow_runs/filter", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _seconds(run: dict) -> float:
    start = dt.datetime.fromisoformat(run["start_time"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(run["end_time"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def modular_night(
    stack: Stack, raw: Path, timeout_s: float = 3600
) -> tuple[float, dict[str, float], dict[str, str]]:
    """Trigger validate-raw as the UI does; wait for publish. (wall seconds, seconds per stage, pool per stage)."""
    t0 = time.perf_counter()
    env = {**stack.env("deploy"), "PREFECT_API_URL": stack.api_url}
    subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deployment", "run",
         "validate-raw/validate-raw", "--param", f"params={json.dumps({'data': str(raw)})}"],
        env=env, cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    while True:
        runs = {
            r["name"].rsplit("-", 3)[0]: r for r in _runs(stack.api_url) if r["name"].endswith(DS.isoformat())
        }
        bad = [r for r in runs.values() if r["state_type"] in ("FAILED", "CRASHED")]
        if bad:
            sys.exit(f"stage {bad[0]['name']} ended {bad[0]['state_type']}: {bad[0]['state']['message']}")
        if runs.get("publish", {}).get("state_type") == "COMPLETED":
            break
        if time.perf_counter() - t0 > timeout_s:
            sys.exit(f"the chain did not publish within {timeout_s:.0f}s; logs in {stack.logs}")
        time.sleep(2)
    wall = time.perf_counter() - t0
    names = [s.replace("_", "-") for s in STAGES]
    return wall, {n: _seconds(runs[n]) for n in names}, {n: runs[n]["work_pool_name"] for n in names}


def monolith_night(home: Path, raw: Path, processes: int) -> tuple[float, dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTREC_", "PREFECT_", "AWS_"))}
    env |= {"NIGHTREC_HOME": str(home), "NIGHTREC_TRAIN__PROCESSES": str(processes)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nightrec.cli", "run", "--data", str(raw)],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"the monolith night failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return wall, json.loads((home / "last_run.json").read_text())["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("/tmp/nightrec-bench-stack"))
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--processes", type=int, default=2, help="training processes (torchrun) in both shapes")
    ap.add_argument(
        "--screenshots",
        action="store_true",
        help="also shoot the Prefect runs and the Spark master (docs/img)",
    )
    args = ap.parse_args()
    shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True)
    args.home.chmod(0o755)  # Postgres runs as its own user
    raw = args.home / "raw"
    gen = synthetic.generate(
        args.users, args.users * 2 // 5, 60, raw, seed=7, events_per_user=100.0, end_date=DS
    )

    mono_wall, mono = monolith_night(args.home / "monolith", raw, args.processes)
    print(f"monolith: {mono_wall:.0f}s", flush=True)

    stack = Stack.open(
        args.home / "stack", raw=raw, extra_env={"NIGHTREC_TRAIN__PROCESSES": str(args.processes)}
    )
    try:
        t0 = time.perf_counter()
        stack.up()
        up_s = time.perf_counter() - t0
        print(f"stack up: {up_s:.0f}s", flush=True)
        wall, stages, pools = modular_night(stack, raw)
        print(f"modular chain: {wall:.0f}s", flush=True)
        rss = _stack_rss_mib(stack)
        _write(args, gen, mono_wall, mono, up_s, wall, stages, pools, rss)
        if args.screenshots:
            sys.path.insert(0, str(ROOT / "docs"))
            from screenshots import shoot

            img = ROOT / "docs" / "img"
            shoot(stack.url("prefect-server") + "/runs", img / "stack-modular-chain.png", size="1500,2250")
            shoot(stack.spark_ui, img / "stack-spark-master.png", size="1400,900", wait_ms=5000)
    finally:
        stack.down()


def _write(args, gen, mono_wall, mono, up_s, wall, stages, pools, rss) -> None:

    lines = [
        f"## Production shape: `nightrec stack` against the monolith (`bench/stack.py`, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, no GPU)",
        "",
        f"Data: {gen.n_users} users, {gen.n_items} items, {gen.n_events:,} events over 60 days; training in "
        f"{args.processes} processes (torchrun, gloo) in both shapes.",
        "",
        f"- Stack up from nothing (Postgres initdb, SeaweedFS, Prefect and MLflow on Postgres, Spark master and two "
        f"workers, deployments and automations registered, four pool workers, the API): **{up_s:.0f} s**; "
        f"resident memory of the idle stack {rss:,.0f} MiB.",
        f"- Modular chain, trigger to published (nine deployments on their pools, each started by the previous "
        f"one's completion event): **{wall:.0f} s**; the monolith (`nightrec run`, one process, local Spark, "
        f"SQLite, a local store): **{mono_wall:.0f} s** from process start to exit.",
        "",
        "| stage | pool | modular run (s) | monolith stage (s) |",
        "| --- | --- | --- | --- |",
    ]
    for stage in STAGES:
        name = stage.replace("_", "-")
        lines.append(f"| {name} | {pools[name]} | {stages[name]:.1f} | {mono.get(stage, float('nan')):.1f} |")
    lines += [
        f"| **sum** | | {sum(stages.values()):.1f} | {sum(mono.values()):.1f} |",
        "",
        f"Chain overhead (wall minus the stage runs: a worker picking each run up, the completion event firing "
        f"the next trigger): {wall - sum(stages.values()):.0f} s. A modular stage run includes its own process "
        "start (imports, a Spark driver JVM for the three Spark stages, connecting to MLflow), which the "
        "monolith pays once.",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on `{_commit()}`.",
    ]
    out = ROOT / "bench" / "results" / "stack.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _stack_rss_mib(stack: Stack) -> float:
    from nightrec.ops.stack import descendants, group_processes

    pids = set()
    for name in stack.process_names():
        if stack.alive(name):
            pids |= set(group_processes(stack.pids[name])) | descendants(stack.pids[name])
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
