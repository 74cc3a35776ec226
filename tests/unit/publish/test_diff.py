"""The night summary compares the new lists with the previous live ones on a bounded user sample."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.io.store import open_store
from nightrec.publish import diff
from schemas.arrow import to_arrow_schema
from schemas.results import ChosenPolicy, Promotion, Publication, SnapshotDiff
from schemas.tables import RECS
from tests.unit.publish import publish

DS = date(2026, 11, 22)


def _recs(folder, lists: dict[str, list[str]]):
    rows = [
        {"user_id": u, "rank": r + 1, "item_id": it, "score": 1.0 / (r + 1), "source": "model"}
        for u, items in lists.items()
        for r, it in enumerate(items)
    ]
    folder.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows).cast(to_arrow_schema(RECS)),
        folder / "part-0.parquet",
    )
    return folder


def test_overlap_identical_share_and_user_churn(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    old, _ = publish(
        store,
        _recs(tmp_path / "a", {"u1": ["a", "b", "c"], "u2": ["d", "e", "f"], "u3": ["g", "h", "i"]}),
        DS,
        "r1",
        shard_count=1,
    )
    new, _ = publish(
        store,
        _recs(tmp_path / "b", {"u1": ["a", "b", "c"], "u2": ["d", "x", "y"], "u4": ["a", "d", "z"]}),
        DS,
        "r2",
        shard_count=1,
    )
    d = diff.diff_snapshots(store, new, old)
    assert (d.users_compared, d.users_only_new, d.users_only_old) == (2, 1, 1)
    assert d.mean_overlap_at_k == pytest.approx((3 / 3 + 1 / 3) / 2)
    assert d.identical_lists == pytest.approx(0.5)
    assert (d.distinct_items_new, d.distinct_items_old) == (7, 9)


def test_refuses_snapshots_bucketed_differently(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    lists = {f"u{i}": ["a", "b"] for i in range(8)}
    old, _ = publish(store, _recs(tmp_path / "a", lists), DS, "r1", shard_count=2)
    new, _ = publish(store, _recs(tmp_path / "b", lists), DS, "r2", shard_count=3)
    with pytest.raises(ValueError, match="bucketed differently"):
        diff.diff_snapshots(store, new, old)


def test_summary_names_the_champion_change_and_the_changes():
    published = Publication(
        manifest_key="recs/ds=2026-11-22/run=r2/manifest.json",
        pointer_key="recs/_live.json",
        store="file:///s",
        generation=2,
        live=True,
        counts={"users": 10, "model_users": 9, "fallback_users": 1, "rows": 100},
        changes=SnapshotDiff(
            users_compared=5,
            users_only_new=1,
            users_only_old=0,
            mean_overlap_at_k=0.4,
            identical_lists=0.2,
            distinct_items_new=30,
            distinct_items_old=28,
        ),
    )
    promotion = Promotion(
        promoted=True,
        previous_policy={"kind": "popularity", "name": "popularity_30d"},
        policy=ChosenPolicy(
            kind="learned", name="learned", params={"retrieval": "2", "ranking": "1"}, candidate="challenger"
        ),
        reason="promoted: challenger beats popularity_30d",
        metric="ndcg_at_10",
        best_baseline="popularity_30d",
        lift_over_best_baseline=0.9,
    )
    md = diff.night_summary_markdown(published, promotion)
    assert "Live policy: learned (popularity_30d → learned)" in md
    assert "40.0%" in md and "| 10 | 9 | 1 |" in md and "+90.0%" in md and "popularity_30d" in md
    kept = diff.night_summary_markdown(published.model_copy(update={"changes": None, "live": False}), None)
    assert "not live" in kept and "Live policy" not in kept
    unchanged = promotion.model_copy(update={"previous_policy": promotion.policy.model_dump()})
    same = diff.night_summary_markdown(published, unchanged)
    assert "Live policy: learned (unchanged)" in same
