"""What changed between the new snapshot and the one it replaces: the night's summary for the on-call engineer.

Both snapshots hash users into parts the same way, so part i of each holds the same users; comparing the first
``max_parts`` parts is a uniform user sample at bounded cost, whatever the number of users.
"""

from __future__ import annotations

import io

import pandas as pd

from nightrec.io.store import ObjectStore
from schemas.manifest import Manifest
from schemas.results import Promotion, Publication, SnapshotDiff


def _read(store: ObjectStore, manifest: Manifest, max_parts: int) -> pd.DataFrame:
    frames = [
        pd.read_parquet(io.BytesIO(store.get_bytes(p.key)), columns=["user_id", "rank", "item_id"])
        for p in manifest.parts[:max_parts]
    ]
    return pd.concat(frames, ignore_index=True)


def diff_snapshots(store: ObjectStore, new: Manifest, old: Manifest, *, max_parts: int = 1) -> SnapshotDiff:
    """Compare two published snapshots on the users of their first ``max_parts`` parts.

    Raises:
        ValueError: the snapshots are sharded differently (their parts hold different users).
    """
    if len(new.parts) != len(old.parts):
        raise ValueError(
            f"snapshots have {len(new.parts)} and {len(old.parts)} parts: their users are bucketed differently"
        )
    a, b = _read(store, new, max_parts), _read(store, old, max_parts)
    users_a, users_b = set(a["user_id"]), set(b["user_id"])
    common = users_a & users_b
    k = max(new.top_k, 1)
    a_c, b_c = a[a["user_id"].isin(common)], b[b["user_id"].isin(common)]
    shared = a_c.merge(b_c, on=["user_id", "item_id"]).groupby("user_id").size()
    overlap = shared.reindex(sorted(common), fill_value=0) / k
    lists_a = a_c.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].agg(tuple)
    lists_b = b_c.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].agg(tuple)
    same = (lists_a == lists_b.reindex(lists_a.index)).mean() if common else 0.0
    return SnapshotDiff(
        users_compared=len(common),
        users_only_new=len(users_a - users_b),
        users_only_old=len(users_b - users_a),
        mean_overlap_at_k=float(overlap.mean()) if common else 0.0,
        identical_lists=float(same),
        distinct_items_new=int(a["item_id"].nunique()),
        distinct_items_old=int(b["item_id"].nunique()),
    )


def night_summary_markdown(published: Publication, promotion: Promotion | None) -> str:
    """The night in one Markdown page: what went live, what changed against the previous lists, the champions."""
    counts = published.counts
    state = "live" if published.live else "published, not live (a newer date is live)"
    lines = [
        f"## Night summary: `{published.manifest_key}` ({state})",
        "",
        f"Store `{published.store}`, generation {published.generation}.",
        "",
        "| users | model lists | fallback lists | short lists | rows |",
        "| --- | --- | --- | --- | --- |",
        f"| {counts.get('users', 0)} | {counts.get('model_users', 0)} | {counts.get('fallback_users', 0)} "
        f"| {counts.get('short_lists', 0)} | {counts.get('rows', 0)} |",
        "",
    ]
    if ch := published.changes:
        lines += [
            "### Against the previous live snapshot (one part: a uniform user sample)",
            "",
            "| users compared | mean overlap@K | identical lists | new users | gone users | distinct items new / old |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {ch.users_compared} | {ch.mean_overlap_at_k:.1%} | {ch.identical_lists:.1%} "
            f"| {ch.users_only_new} | {ch.users_only_old} "
            f"| {ch.distinct_items_new} / {ch.distinct_items_old} |",
            "",
        ]
    elif published.live:
        lines += ["First snapshot: nothing to compare with.", ""]
    if promotion:
        policy = promotion.policy
        before = (promotion.previous_policy or {}).get("name")
        change = f"{before} → {policy.name}" if before != policy.name else "unchanged"
        lift = promotion.lift_over_best_baseline
        lines += [f"### Live policy: {policy.name} ({change})", "", f"Decision: {promotion.reason}."]
        if lift is not None:
            lines[-1] += (
                f" Tonight's learned models against the best baseline ({promotion.best_baseline}) on "
                f"{promotion.metric}: {lift:+.1%}."
            )
    return "\n".join(lines)
