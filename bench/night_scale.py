"""One whole night, then the next, at a scale tier: raw data to a published snapshot, per stage.

Usage: .venv/bin/python bench/night_scale.py --tier {S,M,L} [--data-root DIR] [--home DIR] [--keep]
       .venv/bin/python bench/night_scale.py --table   (rebuild the S/M/L table from the saved tiers)

Tiers (a 10x ladder; 90 days of events, about 100 events per active user):
  S   10,000 users,   2,000 items,   ~1M events
  M  100,000 users,  20,000 items,  ~10M events
  L 1,000,000 users, 100,000 items, ~100M events

The tier's raw data is generated once with the seeded generator (kept under --data-root for the next run).
Night 1 runs `nightrec run --data` on it in a fresh home; night 2 runs on the same data plus one more day of
events, in the same home (what a nightly deployment sees); night 1's published lists are then measured on that
day, which night 1 never saw (bench/published_holdout.py). For each stage the bench records its wall time,
the peak resident memory of the whole process tree (the Spark JVM and any torchrun processes included;
sampled every 0.25 s), and the rows it took in and gave out (from the night's typed results).

Each tier's figures go to bench/results/night_scale_<tier>.json; the Markdown table of every tier measured so
far, with each stage's growth exponent between tiers (log time ratio / log events ratio: 1 is linear), goes to
bench/results/night_scale.md (and bench/RESULTS.md through bench/collect.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.params import STAGES  # noqa: E402

RESULTS = ROOT / "bench" / "results"
END = date(2026, 11, 22)  # night 1's run date (the day after the last generated day)
DAYS = 90
TIERS = {
    "S": {"users": 10_000, "items": 2_000, "events_per_user": 100.0},
    "M": {"users": 100_000, "items": 20_000, "events_per_user": 100.0},
    "L": {"users": 1_000_000, "items": 100_000, "events_per_user": 100.0},
}
_STARTED = re.compile(r"▶ \[(\d+)/(\d+)\] (\w+)")
_ENDED = re.compile(r"[✔✘] \[(\d+)/(\d+)\] (\w+)")


LAYOUT = 2  # night 2's extra day is the generator's own last day (layout 1 drew it from another world)


def generate(tier: str, root: Path) -> dict:
    """Night 2's raw data (DAYS + 1 days) and night 1's (the same log a day earlier); generated once per tier.

    One draw of the generator covers both nights: night 2's one more day comes from the same users, catalog
    and tastes as the days before it, so night 1's published lists can be measured on it (a day night 1
    never saw; ``published_holdout.py``).
    """
    from nightrec.data import synthetic

    spec = TIERS[tier]
    night1, night2, done = root / "night1", root / "night2", root / "generated.json"
    if done.exists() and (info := json.loads(done.read_text())).get("layout") == LAYOUT:
        return info
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    synthetic.generate(
        spec["users"],
        spec["items"],
        DAYS + 1,
        night2,
        seed=19,
        events_per_user=spec["events_per_user"] * (DAYS + 1) / DAYS,  # the same events per day
        end_date=END + timedelta(days=1),
    )
    for table in ("items", "users"):
        (night1 / table).mkdir(parents=True, exist_ok=True)
        for part in sorted((night2 / table).glob("part-*")):
            (night1 / table / part.name).symlink_to(part.resolve())
    (night1 / "events").mkdir(parents=True)
    cut = pa.scalar(datetime(END.year, END.month, END.day, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
    n1 = n2 = 0
    for part in sorted((night2 / "events").glob("part-*")):
        t = pq.read_table(part)
        n2 += t.num_rows
        t = t.filter(pc.less(t["ts"], cut))
        n1 += t.num_rows
        pq.write_table(t, night1 / "events" / part.name)
    info = {
        "tier": tier,
        **spec,
        "days": DAYS,
        "events": n1,
        "next_day_events": n2 - n1,
        "generate_s": round(time.perf_counter() - t0, 1),
        "night1": str(night1),
        "night2": str(night2),
        "layout": LAYOUT,
    }
    done.write_text(json.dumps(info, indent=1))
    return info


class TreeMemory:
    """Samples the resident memory of a process and all its descendants; keeps the peak per phase."""

    def __init__(self, pid: int, every_s: float = 0.25):
        self.root, self.every_s = psutil.Process(pid), every_s
        self.phase, self.peaks, self.peak = "start", {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        total = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            self.peak = max(self.peak, rss)
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            time.sleep(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_night(
    data: Path, home: Path, env_extra: dict[str, str], log: Path, events: int | None = None
) -> dict:
    """`nightrec run --data` in a subprocess, its progress lines read live; per-stage time and peak memory."""
    env = {**os.environ, "NIGHTREC_HOME": str(home), **env_extra}
    cmd = [sys.executable, "-u", "-m", "nightrec.cli", "run", "--data", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    mem = TreeMemory(proc.pid)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    with log.open("w") as out:
        for line in proc.stdout:
            out.write(line)
            now = time.perf_counter() - t0
            if m := _STARTED.search(line):
                mem.phase, starts[m.group(3)] = m.group(3), now
                print(f"  {now:7.1f}s  {m.group(3)} …", flush=True)
            elif m := _ENDED.search(line):
                ends[m.group(3)] = now
                mem.phase = "between"
                print(f"  {now:7.1f}s  {line.strip()}", flush=True)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    mem.stop()
    # A failed night keeps its figures (time and memory of the stages it ran, and why it stopped).
    result = json.loads((home / "last_run.json").read_text()) if rc == 0 else {}
    if rc != 0:
        tail = log.read_text().splitlines()[-12:]
        print(f"night failed ({rc}); its output is in {log}:\n" + "\n".join(tail), flush=True)
    stages = {}
    for name in STAGES:
        if name in starts:
            stages[name] = {
                "seconds": round(result.get("seconds", {}).get(name, ends.get(name, wall) - starts[name]), 1),
                "peak_rss_mb": round(mem.peaks.get(name, 0) / 2**20),
                **rows_of(name, result, events),
            }
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(mem.peak / 2**20),
        "start_s": round(min(starts.values(), default=0.0), 1),
        "stages": stages,
        "run_date": result.get("run_date"),
        "promotion": _promotion(result.get("evaluate_and_promote") or {}),
        "log": str(log),
        "failed": None
        if rc == 0
        else next((ln for ln in log.read_text().splitlines() if "failed:" in ln), "?"),
    }


def rows_of(stage: str, night: dict, events: int | None = None) -> dict:
    """What the stage read and wrote, from the night's typed results (schemas/results.py); ``events``: the raw
    events given to the night (a first night's raw gate has no volume history to report them in)."""
    r = night.get(stage) or {}
    built = (night.get("build_features") or {}).get("rows", {})
    lists = night.get("precompute") or {}
    raw = (night.get("validate_raw") or {}).get("metrics", {}).get("events_total_high") or events
    if stage == "validate_raw":
        return {"rows_in": int(raw) if raw else None}
    if stage == "build_features":
        # Per table written: where the feature build's time goes (a shared frame counts for its first user).
        tables = (night.get("build_features") or {}).get("seconds") or None
        return {
            "rows_in": int(raw) if raw else None,
            "rows_out": sum(built.values()) or None,
            "tables_s": tables,
        }
    if stage == "validate_features":
        return {"rows_in": sum(built.values()) or None}
    if stage.startswith("train_"):
        m = r.get("metrics", {})
        return {
            "rows_in": m.get("n_train"),
            "rows_available": m.get("n_train_available"),
            "reused": r.get("reused"),
        }
    if stage == "evaluate_and_promote":
        users = [m.get("n_eval_users", 0) for m in r.get("metrics", {}).values()]
        return {"rows_in": int(max(users, default=0)) or None}
    if stage in ("precompute", "validate_recs"):
        return {"rows_in": lists.get("users"), "rows_out": lists.get("rows")}
    if stage == "publish":
        c = r.get("counts", {})
        return {"rows_in": c.get("rows"), "rows_out": c.get("users")}
    return {}


def _promotion(p: dict) -> dict:
    metrics = p.get("metrics", {})
    pop = max((m.get("ndcg_at_10", 0.0) for k, m in metrics.items() if k.startswith("popularity")), default=0)
    live = p.get("policy", {}).get("candidate")
    live_ndcg = metrics.get(live, {}).get("ndcg_at_10") if live else None
    return {
        "live": p.get("policy", {}).get("name"),
        "candidate": live,
        "ndcg_at_10": {k: round(m.get("ndcg_at_10", 0.0), 4) for k, m in metrics.items()},
        "live_over_popularity": round(live_ndcg / pop, 2) if live_ndcg and pop else None,
        "reason": p.get("reason"),
    }


def tier_env(tier: str) -> dict[str, str]:
    """Settings the tier runs with: only what a user of that size would set (memory, partitions)."""
    return {
        "S": {"NIGHTREC_SPARK__DRIVER_MEMORY": "4g", "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "4"},
        "M": {"NIGHTREC_SPARK__DRIVER_MEMORY": "6g", "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "8"},
        # The bound: the whole night within 20 GiB; memory_gib lowers the 10g asked to 2/5 of it (8g).
        "L": {
            "NIGHTREC_MEMORY_GIB": "20",
            "NIGHTREC_SPARK__DRIVER_MEMORY": "10g",
            "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "32",
        },
    }[tier]


def _measured(night: dict, tier: dict) -> str:
    """When and on which commit a night ran (a night 2 run with --night 2 has its own)."""
    return f" (measured {night.get('measured', tier['measured'])} on `{night.get('commit', tier['commit'])}`)"


def growth_exponent(sizes: list[float], seconds: list[float | None]) -> float | None:
    """The least-squares slope of log(seconds) on log(sizes): time grows as size to this power (None where a
    tier has no time)."""
    if any(not s for s in seconds) or len(sizes) < 2:
        return None
    x = [math.log(v) for v in sizes]
    y = [math.log(v) for v in seconds]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def write_table() -> str:
    """The Markdown of every tier saved so far, with growth exponents between consecutive tiers."""
    saved = {t: json.loads(p.read_text()) for t in TIERS if (p := RESULTS / f"night_scale_{t}.json").exists()}
    lines = [
        "## One whole night at scale (`bench/night_scale.py`)",
        "",
        "Raw data to a published snapshot with `nightrec run --data`, one process (local Spark, MLflow on "
        "SQLite, a local object store); night 2 is the same home on the same data plus one more day (the "
        "generator's own next day: the same users, catalog and tastes). Peak "
        "memory is the resident memory of the whole process tree, the Spark JVM included. A pairwise exponent "
        "is log(time ratio) / log(events ratio) against the tier before (1 = linear in events); the fitted one "
        "is the least-squares slope of log(time) on log(events) across every tier measured.",
        "",
    ]
    for t, s in saved.items():
        d, n1, n2 = s["data"], s["night1"], s.get("night2")
        second = (
            f"night 2 {n2['wall_s']:.0f} s ({n2['wall_s'] / n1['wall_s']:.0%} of night 1), peak "
            f"{n2['peak_rss_mb'] / 1024:.1f} GiB{_measured(n2, s)}"
            if n2
            else "night 2 not measured"
        )
        lines += [
            f"- **{t}**: {d['users']:,} users, {d['items']:,} items, {d['events']:,} events over {d['days']} days "
            f"(+{d['next_day_events']:,} on night 2); generated in {d['generate_s']} s. {s['machine']}. "
            f"Night 1 {n1['wall_s']:.0f} s, peak {n1['peak_rss_mb'] / 1024:.1f} GiB{_measured(n1, s)}; "
            f"{second}. Live: {n1['promotion']['live']} at {n1['promotion']['live_over_popularity']}x "
            "popularity's NDCG@10 (night 1)"
            + (
                f", {n2['promotion']['live']} at {n2['promotion']['live_over_popularity']}x (night 2)."
                if n2 and n2.get("promotion")
                else "."
            )
        ]
    for t, s in saved.items():
        if r := s.get("published_holdout"):
            pops = ", ".join(
                f"{name} {b['ndcg_at_10']:.4f} ({b['published_over']}x, paired {b['diff_ci'][0]:+.4f} "
                f"[{b['diff_ci'][1]:+.4f}, {b['diff_ci'][2]:+.4f}])"
                for name, b in r["baselines"].items()
            )
            lines.append(
                f"- **{t}, night 1's published lists on the day night 2 added** ({r['policy']}, "
                f"{r['users']:,} users with unseen engagement that day, bench/published_holdout.py): NDCG@10 "
                f"{r['published_lists']['ndcg_at_10']:.4f}; popularity refit on night 1's data and scored by the "
                f"production scorer: {pops}."
            )
    lines += [""]
    tiers = list(saved)
    head = ["stage"]
    for t in tiers:
        head += [f"{t} s", f"{t} peak GiB", f"{t} rows in"]
    head += [f"exp {a}→{b}" for a, b in zip(tiers, tiers[1:], strict=False)]
    head += [f"exp fit {tiers[0]}–{tiers[-1]}"] if len(tiers) > 2 else []
    head += [f"{t} night 2 s" for t in tiers]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for stage in [*STAGES, "whole night"]:
        row = [stage]
        secs = []
        for t in tiers:
            st = saved[t]["night1"]["stages"].get(stage, {}) if stage != "whole night" else saved[t]["night1"]
            sec = st.get("seconds", st.get("wall_s"))
            secs.append(sec)
            peak = st.get("peak_rss_mb")
            rows = st.get("rows_in")
            row += [
                f"{sec:.1f}" if sec else "",
                f"{peak / 1024:.1f}" if peak else "",
                f"{int(rows):,}" if rows else "",
            ]
        for (a, b), (sa, sb) in zip(
            zip(tiers, tiers[1:], strict=False), zip(secs, secs[1:], strict=False), strict=True
        ):
            ea, eb = saved[a]["data"]["events"], saved[b]["data"]["events"]
            row.append(f"{math.log(sb / sa) / math.log(eb / ea):.2f}" if sa and sb else "")
        if len(tiers) > 2:
            fit = growth_exponent([saved[t]["data"]["events"] for t in tiers], secs)
            row.append(f"{fit:.2f}" if fit is not None else "")
        for t in tiers:
            n2 = saved[t].get("night2") or {"stages": {}}
            st = n2["stages"].get(stage, {}) if stage != "whole night" else n2
            sec = st.get("seconds", st.get("wall_s"))
            row.append(f"{sec:.1f}" if sec else "")
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "night_scale.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", choices=list(TIERS))
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/nightrec-scale-data"))
    ap.add_argument("--home", type=Path, default=None, help="default /tmp/nightrec-scale-<tier>")
    ap.add_argument("--table", action="store_true", help="only rebuild the table from the saved tiers")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE added to the nights' environment")
    ap.add_argument(
        "--night",
        choices=["1", "2", "both"],
        default="both",
        help="2: only night 2, in the home night 1 left (its figures are kept from the saved tier)",
    )
    args = ap.parse_args()
    if args.table or not args.tier:
        print(write_table())
        return
    tier = args.tier
    t0 = time.perf_counter()
    data = generate(tier, args.data_root / tier)
    print(
        f"data: {data['events']:,} events (+{data['next_day_events']:,}) in {time.perf_counter() - t0:.0f} s"
    )
    home = args.home or Path(f"/tmp/nightrec-scale-{tier}")
    saved = RESULTS / f"night_scale_{tier}.json"
    if args.night != "2":
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
    env = tier_env(tier) | dict(kv.split("=", 1) for kv in args.env)
    out = json.loads(saved.read_text()) if args.night == "2" else {}
    out |= {
        "tier": tier,
        "data": data,
        "env": env,
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # A copy of the tree (run apart from a checkout being edited) names its commit in the environment.
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or os.environ.get("NIGHTREC_BENCH_COMMIT", "?"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB",
    }
    nights = {"1": ("night1",), "2": ("night2",), "both": ("night1", "night2")}[args.night]
    for night in nights:
        print(f"{tier} {night}:", flush=True)
        events = data["events"] + (data["next_day_events"] if night == "night2" else 0)
        out[night] = run_night(Path(data[night]), home, env, home / f"{night}.log", events)
        out[night] |= {
            "commit": out["commit"],
            "measured": out["measured"],
        }  # with --night 2, night 1's differ
        print(f"  wall {out[night]['wall_s']} s, peak {out[night]['peak_rss_mb']} MB", flush=True)
        saved.write_text(json.dumps(out, indent=1))
    n1, n2 = (out.get(n, {}).get("run_date") for n in ("night1", "night2"))
    if "night2" in nights and n1 and n2:
        # Night 1's live lists on the day night 2 added: the lists' own held-out quality.
        from published_holdout import describe, measure

        out["published_holdout"] = measure(home, date.fromisoformat(n1), date.fromisoformat(n2))
        print(describe(out["published_holdout"]), flush=True)
        saved.write_text(json.dumps(out, indent=1))
    print(write_table())


if __name__ == "__main__":
    main()
