"""The synthetic generator: contract, invariants and planted structure (measured so that it could fail)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from nightrec.data import synthetic
from schemas.arrow import to_arrow_schema
from schemas.tables import RAW_TABLES

END = dt.date(2026, 11, 22)
DAYS = 60


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[synthetic.GenerateSummary, dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    summary = synthetic.generate(2000, 600, DAYS, out, seed=11, events_per_user=80.0, end_date=END)
    frames = {name: pq.read_table(out / name).to_pandas() for name in RAW_TABLES}
    return summary, frames


@pytest.fixture(scope="module")
def clicks(generated) -> pd.DataFrame:
    _, f = generated
    ev = f["events"].merge(f["items"][["item_id", "category"]], on="item_id", how="inner")
    return ev[ev["event_type"] == "click"]


def _top3(clicks: pd.DataFrame) -> pd.DataFrame:
    """Each user's three most clicked categories (ties broken by name)."""
    n = clicks.groupby(["user_id", "category"]).size().rename("n").reset_index()
    n = n.sort_values(["user_id", "n", "category"], ascending=[True, False, True])
    return n.groupby("user_id").head(3)[["user_id", "category"]]


def _hit_rate(events: pd.DataFrame, top: pd.DataFrame) -> float:
    hit = events.merge(top.assign(hit=True), on=["user_id", "category"], how="left")["hit"]
    return float(hit.fillna(False).astype(bool).mean())


def _midnight(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.*"))
    }


def test_files_match_the_contract_schemas(generated):
    summary, _ = generated
    for name, table in RAW_TABLES.items():
        parts = sorted((summary.out / name).glob("part-*.parquet"))
        assert parts, name
        for p in parts:
            assert pq.read_schema(p).equals(to_arrow_schema(table)), p


def test_summary_counts_and_window(generated):
    summary, f = generated
    ev = f["events"]
    assert summary.n_events == len(ev) and summary.n_items == len(f["items"]) == 600
    assert summary.event_counts == ev["event_type"].value_counts().to_dict()
    assert (summary.first_day, summary.last_day) == (
        END - dt.timedelta(days=DAYS),
        END - dt.timedelta(days=1),
    )
    assert ev["ts"].min() >= _midnight(summary.first_day)
    assert ev["ts"].max() < _midnight(END)
    assert ev["ts"].max().date() == summary.last_day
    assert 8 <= summary.n_clusters <= 12


def test_event_mix_values_and_sessions(generated):
    _, f = generated
    ev = f["events"]
    engaged = (ev["event_type"] != "impression").mean()
    assert 0.3 <= engaged <= 0.5
    assert set(ev["event_type"]) == {"impression", "click", "cart", "purchase"}
    buys = ev[ev["event_type"] == "purchase"].merge(f["items"][["item_id", "price"]], on="item_id")
    assert len(buys) > 0 and (buys["value"] == buys["price"]).all()
    assert ev.loc[ev["event_type"] != "purchase", "value"].isna().all()
    assert ev["session_id"].notna().all()
    assert ev.groupby("session_id")["user_id"].nunique().max() == 1


def test_referential_integrity_and_creation_times(generated):
    _, f = generated
    ev, items = f["events"], f["items"]
    assert set(ev["item_id"]) <= set(items["item_id"])
    assert set(ev["user_id"]) <= set(f["users"]["user_id"])
    assert items["item_id"].is_unique and f["users"]["user_id"].is_unique
    created = ev.merge(items[["item_id", "created_at"]], on="item_id")
    assert (created["ts"] >= created["created_at"]).all()
    assert (items["created_at"] >= _midnight(END - dt.timedelta(days=DAYS))).mean() > 0.05  # some new items


def test_catalog_and_user_attributes(generated):
    _, f = generated
    items, users = f["items"], f["users"]
    assert 0.005 < (~items["available"]).mean() < 0.08
    assert items["tags"].map(len).between(2, 3).all()
    assert items["attributes"].map(lambda a: dict(a).keys() == {"brand"}).all()
    assert items["category"].value_counts().max() > 2 * items["category"].value_counts().min()
    assert (items["price"] > 0).all()
    segments = users["attributes"].map(lambda a: dict(a)["segment"])
    assert set(segments) <= set(synthetic.SEGMENTS) and segments.nunique() > 1
    assert users["attributes"].map(lambda a: dict(a)["country"]).isin(synthetic.COUNTRIES).all()


def test_cold_users_have_no_events_and_the_rest_engage(generated):
    summary, f = generated
    ev = f["events"]
    cold = set(f["users"]["user_id"]) - set(ev["user_id"])
    assert len(cold) == summary.n_cold_users and 20 <= len(cold) <= 110  # ~3% of 2000
    engaged = ev[ev["event_type"] != "impression"].groupby("user_id").size()
    assert len(engaged) == 2000 - len(cold)
    assert (engaged >= 3).mean() > 0.99


def test_duplicates_are_exact_replays_at_about_half_a_percent(generated):
    _, f = generated
    ev = f["events"]
    share = ev.drop(columns=["value"]).assign(v=ev["value"].fillna(-1)).duplicated().mean()
    assert 0.002 < share < 0.01


def test_activity_and_popularity_are_heavy_tailed(generated):
    _, f = generated
    ev = f["events"]
    per_user = ev.groupby("user_id").size()
    assert per_user.quantile(0.99) > 5 * per_user.median()
    per_item = ev["item_id"].value_counts()
    top1 = per_item.iloc[: len(f["items"]) // 100].sum() / len(ev)
    assert top1 > 0.1  # a uniform catalog would give 0.01


def test_held_out_clicks_follow_personal_taste_not_popularity(generated, clicks):
    holdout = _midnight(END - dt.timedelta(days=7))
    hist, held = clicks[clicks["ts"] < holdout], clicks[clicks["ts"] >= holdout]
    top = _top3(hist)
    personal = _hit_rate(held, top)
    share = hist["category"].value_counts(normalize=True)
    expected = held["user_id"].map(top.assign(s=top["category"].map(share)).groupby("user_id")["s"].sum())
    by_popularity = float(expected.fillna(0).mean())
    assert personal > 2 * by_popularity, (personal, by_popularity)


def test_impressions_in_favourite_categories_get_clicked_more(generated, clicks):
    _, f = generated
    mid = _midnight(END - dt.timedelta(days=DAYS // 2))
    top = _top3(clicks[clicks["ts"] < mid])  # taste from the first half, click rates on the second
    keys = ["user_id", "item_id", "session_id"]
    ev = f["events"][f["events"]["ts"] >= mid].merge(f["items"][["item_id", "category"]], on="item_id")
    shown = ev[ev["event_type"] == "impression"].drop_duplicates(keys)
    clicked = ev[ev["event_type"] == "click"][keys].drop_duplicates().assign(clicked=True)
    shown = shown.merge(clicked, on=keys, how="left").merge(
        top.assign(fav=True), on=["user_id", "category"], how="left"
    )
    rate = shown.assign(clicked=shown["clicked"].fillna(False).astype(bool))
    rate = rate.groupby(rate["fav"].fillna(False).astype(bool))["clicked"].mean()
    assert rate[True] > 1.5 * rate[False], rate.to_dict()


def test_recent_taste_predicts_the_holdout_better_than_old_taste(generated, clicks):
    holdout = _midnight(END - dt.timedelta(days=7))
    old = clicks[clicks["ts"] < _midnight(END - dt.timedelta(days=DAYS - 14))]
    recent = clicks[(clicks["ts"] >= holdout - pd.Timedelta(days=14)) & (clicks["ts"] < holdout)]
    held = clicks[clicks["ts"] >= holdout]
    assert _hit_rate(held, _top3(recent)) > _hit_rate(held, _top3(old)) + 0.05


def test_some_items_trend_in_the_last_two_weeks(generated):
    _, f = generated
    start, trend_start = _midnight(END - dt.timedelta(days=DAYS)), _midnight(END - dt.timedelta(days=14))
    ev = f["events"].merge(f["items"][["item_id", "created_at"]], on="item_id")
    ev = ev[ev["created_at"] < start]
    n = ev.groupby([ev["ts"] >= trend_start, "item_id"]).size().unstack(0, fill_value=0)
    ratio = (n[True] / 14) / ((n[False] + 1) / (DAYS - 14))
    assert ((ratio > 5) & (n[True] >= 20)).sum() >= 3


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = {"events_per_user": 20.0, "seed": 5}
    a, b = (
        synthetic.generate(60, 40, 10, tmp_path / "a", **kw),
        synthetic.generate(60, 40, 10, tmp_path / "b", **kw),
    )
    c = synthetic.generate(60, 40, 10, tmp_path / "c", events_per_user=20.0, seed=6)
    assert _hashes(a.out) == _hashes(b.out)
    assert _hashes(a.out) != _hashes(c.out)


def test_chunks_become_parts_and_stale_parts_are_removed(tmp_path, monkeypatch):
    out = tmp_path / "raw"
    monkeypatch.setattr(synthetic, "_CHUNK_EVENTS", 500)
    many = synthetic.generate(200, 50, 10, out, events_per_user=30.0)
    parts = sorted((out / "events").glob("part-*.parquet"))
    assert len(parts) > 3
    assert sum(pq.read_metadata(p).num_rows for p in parts) == many.n_events
    sessions = [set(pq.read_table(p, columns=["session_id"])["session_id"].to_pylist()) for p in parts]
    assert sum(map(len, sessions)) == len(set().union(*sessions))  # session ids do not collide across parts
    monkeypatch.undo()
    synthetic.generate(200, 50, 10, out, events_per_user=30.0)
    assert len(list((out / "events").glob("part-*"))) == 1


def test_csv_mode_holds_the_same_data_in_the_agreed_string_forms(tmp_path):
    kw = {"seed": 2, "events_per_user": 15.0}
    pq_out = synthetic.generate(50, 30, 7, tmp_path / "pq", **kw).out
    csv_out = synthetic.generate(50, 30, 7, tmp_path / "csv", fmt="csv", **kw).out
    items_pq = pq.read_table(pq_out / "items").to_pandas()
    items_csv = pd.read_csv(csv_out / "items" / "part-00000.csv", dtype=str, keep_default_na=False)
    assert list(items_csv.columns) == list(items_pq.columns)
    assert items_csv["tags"].tolist() == ["|".join(t) for t in items_pq["tags"]]
    assert items_csv["attributes"].map(json.loads).tolist() == items_pq["attributes"].map(dict).tolist()
    assert items_csv["available"].isin(["true", "false"]).all()
    assert items_csv["created_at"].str.endswith("Z").all()
    events_csv = pd.read_csv(csv_out / "events" / "part-00000.csv")
    events_pq = pq.read_table(pq_out / "events").to_pandas()
    assert (pd.to_datetime(events_csv["ts"], utc=True) == events_pq["ts"]).all()
    assert events_csv["value"].isna().tolist() == events_pq["value"].isna().tolist()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_items": 5, "n_categories": 10},
        {"n_categories": 2},
        {"fmt": "json"},
        {"n_days": 0},
        {"cold_users": 1.5},
    ],
)
def test_impossible_arguments_are_refused(tmp_path, kwargs):
    args = {"n_users": 10, "n_items": 20, "n_days": 5, "out": tmp_path} | kwargs
    with pytest.raises(ValueError):
        synthetic.generate(**args)


@pytest.fixture(scope="module")
def csv_and_parquet(tmp_path_factory) -> tuple[Path, Path]:
    root, kw = tmp_path_factory.mktemp("csv_vs_parquet"), {"seed": 4, "events_per_user": 10.0}
    return (
        synthetic.generate(40, 20, 5, root / "csv", fmt="csv", **kw).out,
        synthetic.generate(40, 20, 5, root / "pq", **kw).out,
    )


def _spark_rows(spark, root: Path, name: str, columns: list[str]) -> list[tuple]:
    from nightrec.io import raw

    return sorted(tuple(r) for r in raw.read_raw_table(spark, root, name).select(*columns).collect())


@pytest.mark.spark
def test_spark_reads_the_csv_form_like_the_parquet_form(spark, csv_and_parquet):
    csv_out, pq_out = csv_and_parquet
    for name, columns in {
        "events": ["user_id", "item_id", "event_type", "ts", "value", "session_id"],
        "items": ["item_id", "category", "tags", "price", "available", "created_at"],
        "users": ["user_id", "signup_at"],
    }.items():
        assert _spark_rows(spark, csv_out, name, columns) == _spark_rows(spark, pq_out, name, columns), name


@pytest.mark.spark
def test_spark_reads_csv_attributes(spark, csv_and_parquet):
    csv_out, pq_out = csv_and_parquet
    for name, key in (("items", "item_id"), ("users", "user_id")):
        csv_rows = {k: dict(v or {}) for k, v in _spark_rows(spark, csv_out, name, [key, "attributes"])}
        pq_rows = {k: dict(v or {}) for k, v in _spark_rows(spark, pq_out, name, [key, "attributes"])}
        assert csv_rows == pq_rows and all(csv_rows.values())
