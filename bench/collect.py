"""Assemble bench/RESULTS.md from the latest figures each benchmark wrote under bench/results/.

Usage: .venv/bin/python bench/collect.py   (after running any of bench/*.py)
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "demo",
    "quality",
    "quality_learned",
    "train",
    "precompute",
    "precompute_stage",
    "report",
    "serve",
    "validation",
    "etl",
    "etl_100m",
    "night_scale",
    "evaluate_stage",
    "stack",
]
HEADER = """# Benchmark results

Latest figures of each script in `bench/`, machine and load noted in each section (this file is assembled by
`bench/collect.py` from `bench/results/*.md`; rerun a script, then the collector). Goals are those of the issues;
a figure measured while other jobs shared the 2 cores says so.
"""


def main() -> None:
    found = {p.stem: p for p in (HERE / "results").glob("*.md")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    parts = [HEADER] + [found[n].read_text().strip() + "\n" for n in names]
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"bench/RESULTS.md: {', '.join(names)}")


if __name__ == "__main__":
    main()
