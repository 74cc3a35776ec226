"""A second opinion on the feature ETL: the per-user and per-item aggregates of ``nightrec.features`` in DuckDB.

Independent SQL over the raw Parquet files, written from the column docs in ``schemas/tables.py`` rather than
from the Spark code, so that a test can compare the two on the same input. Keys are raw ids (``user_id``,
``item_id``) and categories are names: vocabulary indices are Spark's business, not the aggregates'.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb

from nightrec.features.point_in_time import CTR_PRIOR_IMPRESSIONS, CTR_WINDOW_DAYS
from nightrec.io import raw
from nightrec.settings import FeatureSettings
from schemas.tables import COUNT_EVENT_TYPES, COUNT_WINDOWS, POPULARITY_WINDOWS, RAW_TABLES, count_column


def _ts(d: date) -> str:
    return f"TIMESTAMP '{datetime.combine(d, time(0)).isoformat(sep=' ')}'"


def _glob(raw_root: Path, table: str) -> str:
    """The table's Parquet files as a DuckDB list literal (the same files the Spark reader takes)."""
    fmt, files = raw.table_files(Path(raw_root), RAW_TABLES[table])
    if fmt != "parquet":
        raise ValueError(f"the DuckDB reference reads Parquet raw data only; {table} is {fmt}")
    return "[" + ", ".join(f"'{f}'" for f in files) + "]"


def register_clean_events(
    con: duckdb.DuckDBPyConnection, raw_root: Path, run_date: date, cfg: FeatureSettings
):
    """Views ``items``, ``users`` and ``clean`` (deduplicated, weighted events before the run date)."""
    weights = " ".join(f"WHEN '{k}' THEN {float(v)!r}" for k, v in cfg.event_weights.items())
    types = ", ".join(f"'{k}'" for k in cfg.event_weights)
    con.execute(f"""
        CREATE OR REPLACE VIEW items AS
            SELECT * FROM read_parquet({_glob(raw_root, "items")}) QUALIFY row_number() OVER (
                PARTITION BY item_id ORDER BY item_id) = 1;
        CREATE OR REPLACE VIEW users AS
            SELECT * FROM read_parquet({_glob(raw_root, "users")}) QUALIFY row_number() OVER (
                PARTITION BY user_id ORDER BY user_id) = 1;
        CREATE OR REPLACE TABLE clean AS
            SELECT *, CASE WHEN event_type = 'rating' AND value < {cfg.min_rating!r} THEN 0.0
                           ELSE CASE event_type {weights} ELSE 0.0 END END AS weight
            FROM (
                SELECT user_id, item_id, event_type, ts, max(value) AS value, count(*) AS n_copies
                FROM read_parquet({_glob(raw_root, "events")})
                WHERE ts < {_ts(run_date)} AND event_type IN ({types})
                  AND user_id IS NOT NULL AND item_id IS NOT NULL AND ts IS NOT NULL
                  AND item_id IN (SELECT item_id FROM items)
                GROUP BY user_id, item_id, event_type, ts
            );
    """)


def user_aggregates(
    con: duckdb.DuckDBPyConnection, cutoff: date, history_len: int = 20
) -> duckdb.DuckDBPyRelation:
    """user_id, history, n_events, days_since_last, top_category, top_category_share, top3_category_share,
    mean_price, and n_<type>_<w>d for every counted type and window; one row per user in ``users`` or seen
    before the cutoff.

    ``history`` holds item ids, newest first; events at the same time go in descending item id, which is the
    order of a first night's item vocabulary (indices are given in sorted id order).
    """
    cut = _ts(cutoff)
    counts = ",\n".join(
        f"count(*) FILTER (WHERE event_type = '{t}' AND ts >= {cut} - INTERVAL {w} DAY) AS {count_column(t, w)}"
        for t in COUNT_EVENT_TYPES
        for w in COUNT_WINDOWS
    )
    coalesced = ", ".join(
        f"coalesce(s.{count_column(t, w)}, 0) AS {count_column(t, w)}"
        for t in COUNT_EVENT_TYPES
        for w in COUNT_WINDOWS
    )
    return con.sql(f"""
        WITH before AS (
            SELECT c.*, i.price, i.category FROM clean c JOIN items i USING (item_id) WHERE c.ts < {cut}
        ), stats AS (
            SELECT user_id, {counts},
                count(*) FILTER (WHERE weight > 0) AS n_events,
                (epoch_us({cut}) - epoch_us(max(ts) FILTER (WHERE weight > 0))) / 86400e6 AS days_since_last,
                avg(price) FILTER (WHERE weight > 0) AS mean_price
            FROM before GROUP BY user_id
        ), by_cat AS (
            SELECT user_id, category, sum(weight) AS w,
                row_number() OVER (PARTITION BY user_id ORDER BY sum(weight) DESC, category) AS rn
            FROM before WHERE weight > 0 GROUP BY user_id, category
        ), affinity AS (
            SELECT user_id, max(category) FILTER (WHERE rn = 1) AS top_category,
                sum(w) FILTER (WHERE rn = 1) / sum(w) AS top_category_share,
                sum(w) FILTER (WHERE rn <= 3) / sum(w) AS top3_category_share
            FROM by_cat GROUP BY user_id
        ), hist AS (
            SELECT user_id, list(item_id ORDER BY ts DESC, item_id DESC)[1:{int(history_len)}] AS history
            FROM before WHERE weight > 0 GROUP BY user_id
        ), known AS (
            SELECT user_id FROM users UNION SELECT user_id FROM before
        )
        SELECT k.user_id, coalesce(h.history, []::VARCHAR[]) AS history, coalesce(s.n_events, 0) AS n_events, s.days_since_last, a.top_category,
            a.top_category_share, a.top3_category_share, s.mean_price, {coalesced}
        FROM known k LEFT JOIN stats s USING (user_id) LEFT JOIN affinity a USING (user_id)
            LEFT JOIN hist h USING (user_id)
    """)


def item_aggregates(
    con: duckdb.DuckDBPyConnection, cutoff: date, popularity_days: int
) -> duckdb.DuckDBPyRelation:
    """item_id, price_bucket, popularity, pop_bucket, age_days, popularity_<w>d, trend_7d_30d, impressions_30d,
    clicks_30d, ctr_smoothed; one row per catalog item."""
    cut = _ts(cutoff)

    def since(days: int) -> str:
        return f"ts >= {_ts(cutoff - timedelta(days=days))}"

    pops = ",\n".join(
        f"coalesce(sum(weight) FILTER (WHERE {since(w)}), 0.0) AS popularity_{w}d" for w in POPULARITY_WINDOWS
    )
    pop_cols = ", ".join(f"coalesce(s.popularity_{w}d, 0.0) AS popularity_{w}d" for w in POPULARITY_WINDOWS)
    ctr = since(CTR_WINDOW_DAYS)
    return con.sql(f"""
        WITH s AS (
            SELECT item_id,
                coalesce(sum(weight) FILTER (WHERE {since(popularity_days)}), 0.0) AS popularity, {pops},
                count(*) FILTER (WHERE {ctr} AND event_type = 'impression') AS impressions_30d,
                count(*) FILTER (WHERE {ctr} AND event_type = 'click') AS clicks_30d
            FROM clean WHERE ts < {cut} GROUP BY item_id
        ), prior AS (
            SELECT sum(clicks_30d) / nullif(sum(impressions_30d), 0) AS p FROM s
        ), priced AS (
            SELECT item_id, ntile(10) OVER (ORDER BY price, item_id) AS price_bucket FROM items
            WHERE price IS NOT NULL
        ), joined AS (
            SELECT i.item_id, i.created_at, coalesce(pr.price_bucket, 0) AS price_bucket,
                coalesce(s.popularity, 0.0) AS popularity, {pop_cols},
                coalesce(s.impressions_30d, 0) AS impressions_30d, coalesce(s.clicks_30d, 0) AS clicks_30d
            FROM items i LEFT JOIN s USING (item_id) LEFT JOIN priced pr USING (item_id)
        )
        SELECT item_id, price_bucket, popularity,
            least(floor(log2(popularity + 1.0)), 31)::INTEGER AS pop_bucket,
            CASE WHEN {cut} >= created_at THEN (epoch_us({cut}) - epoch_us(created_at)) / 86400e6 END
                AS age_days,
            {", ".join(f"popularity_{w}d" for w in POPULARITY_WINDOWS)},
            CASE WHEN popularity_30d > 0 THEN (popularity_7d / 7.0) / (popularity_30d / 30.0) END AS trend_7d_30d,
            impressions_30d, clicks_30d,
            least((clicks_30d + {CTR_PRIOR_IMPRESSIONS!r} * prior.p) / (impressions_30d + {CTR_PRIOR_IMPRESSIONS!r}), 1.0)
                AS ctr_smoothed
        FROM joined, prior
    """)


def duplicates_dropped(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT coalesce(sum(n_copies - 1), 0) FROM clean").fetchall()[0][0])


def connect(threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con
