"""Scenarios 1-9 of RELIABILITY.md at the raw gate: planted bad data, and the message on-call reads."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from nightrec.errors import GateFailed
from nightrec.validation import gates
from tests.conftest import make_settings
from tests.validation.conftest import RUN_DATE, read_table, seed_history, write_table

LAST_DAY = (RUN_DATE - timedelta(days=1)).isoformat()


def _fail(spark, raw, settings) -> str:
    report = gates.validate_raw(spark, raw, settings, RUN_DATE)
    assert not report.success
    with pytest.raises(GateFailed) as e:
        report.raise_if_failed()
    msg = str(e.value)
    assert "Traceback" not in msg and "Py4J" not in msg
    # What the terminal shows of it: a first screen, with the rule and where to read the rest.
    brief = e.value.brief()
    assert len(brief.splitlines()) <= 9 and e.value.failures[0].rule in brief, brief
    assert not report.data_docs or report.data_docs in brief
    return msg


def _pass(spark, raw, settings) -> gates.GateReport:
    report = gates.validate_raw(spark, raw, settings, RUN_DATE)
    assert report.success, report.summary()
    return report


@pytest.fixture
def s(tmp_path):
    return make_settings(tmp_path / "home")


def test_clean_data_passes_and_writes_a_per_run_data_docs_site(spark, tiny_raw, s):
    report = _pass(spark, tiny_raw, s)
    assert report.data_docs.endswith(f"ds={RUN_DATE}/index.html")
    assert "raw_checks" in {r.suite for r in report.results}
    assert (s.home / "data_docs" / "index.html").read_text().count(f"ds={RUN_DATE}") == 1


# Scenario 1: truncated or corrupt Parquet.
def test_truncated_parquet_names_the_file_and_the_reader_error(spark, raw_copy, s):
    part = sorted((raw_copy / "events").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    msg = _fail(spark, raw_copy, s)
    assert str(part) in msg and "unreadable Parquet file" in msg and "raw_events_read" in msg


# Scenario 2: schema drift.
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("drop_event_type", ["column 'event_type'", "required column missing"]),
        ("ts_as_string", ["column 'ts'", "expected timestamp", "found string"]),
        ("rename_item_id", ["column 'item_id'", "required column missing", "product_id"]),
    ],
)
def test_schema_drift_names_column_types_and_file(spark, raw_copy, s, change, expected):
    tbl = read_table(raw_copy, "events")
    if change == "drop_event_type":
        tbl = tbl.drop_columns(["event_type"])
    elif change == "ts_as_string":
        tbl = tbl.set_column(tbl.schema.get_field_index("ts"), "ts", pc.cast(tbl["ts"], pa.string()))
    else:
        tbl = tbl.rename_columns(["product_id" if c == "item_id" else c for c in tbl.column_names])
    write_table(raw_copy, "events", tbl)
    msg = _fail(spark, raw_copy, s)
    assert all(e in msg for e in expected), msg
    assert str(raw_copy / "events" / "part-00000.parquet") in msg


def test_extra_columns_are_only_warned(spark, raw_copy, s):
    tbl = read_table(raw_copy, "events")
    write_table(raw_copy, "events", tbl.append_column("campaign", pa.array(["x"] * tbl.num_rows)))
    report = _pass(spark, raw_copy, s)
    assert any("campaign" in w.detail for w in report.warnings)


# Scenario 4: duplicate events / a replayed day.
def test_replayed_day_is_counted_and_left_to_dedupe(spark, raw_copy, s, clean_stats):
    ev = read_table(raw_copy, "events").to_pandas()
    day = ev[ev["ts"].dt.strftime("%Y-%m-%d") == LAST_DAY]
    write_table(raw_copy, "events", pd.concat([ev, day], ignore_index=True))
    report = _pass(spark, raw_copy, s)
    replayed = report.stats["events"]["duplicates"] - clean_stats["events"]["duplicates"]
    assert replayed == len(day)
    assert f"{report.stats['events']['duplicates']} duplicate events" in " ".join(report.notes)


def _catalog(spark, raw_root):
    """The catalog's item index, as build_features makes it on a first night."""
    from pyspark.sql import functions as F

    from nightrec.features import events, vocab
    from nightrec.io import raw

    items = raw.read_raw_table(spark, raw_root, "items")
    ids = vocab.extend_vocab(None, items.select(F.col("item_id").alias("value")), "item_id")
    return events.catalog_index(items, vocab.lookup(ids, "item_id", "item_id", "item_idx"))


def test_dedupe_is_idempotent_features_of_x_union_x_equal_features_of_x(spark, tiny_raw, s):
    from nightrec.features.events import clean_events
    from nightrec.io import raw

    events = raw.read_raw_table(spark, tiny_raw, "events")
    catalog = _catalog(spark, tiny_raw)
    once = clean_events(events, catalog, RUN_DATE, s.features)
    twice = clean_events(events.unionByName(events), catalog, RUN_DATE, s.features)
    assert once.count() == twice.count()
    assert twice.exceptAll(once).count() == 0


# A past date on the whole log: the later weeks are expected in a backfill, and only there.
def test_a_backfilled_date_accepts_the_later_events_a_nightly_run_refuses(spark, tiny_raw, s):
    past = RUN_DATE - timedelta(days=10)
    report = gates.validate_raw(spark, tiny_raw, s, past)
    assert not report.success
    with pytest.raises(GateFailed) as e:
        report.raise_if_failed()
    assert "out_of_range_ts_share" in str(e.value) and "--backfill" in str(e.value)
    report = gates.validate_raw(spark, tiny_raw, s, past, backfill=True)
    assert report.success, report.summary()
    future = report.stats["events"]["future_ts"]
    assert future > 0 and f"({future} after the run date) will not reach features" in " ".join(report.notes)


# Scenario 5: future, pre-1970 and non-UTC timestamps.
def test_out_of_range_timestamps_are_counted_and_never_reach_features(spark, raw_copy, s):
    ev = read_table(raw_copy, "events").to_pandas()
    shifted = ev.sample(frac=0.01, random_state=1).index
    ev.loc[shifted, "ts"] += pd.Timedelta(days=30)
    ev.loc[ev.index[:3], "ts"] = pd.Timestamp("1960-01-01", tz="UTC")
    write_table(raw_copy, "events", ev)
    report = _pass(spark, raw_copy, s)
    n = int((ev["ts"] >= pd.Timestamp(RUN_DATE, tz="UTC")).sum()) + 3
    assert n > 3
    assert report.stats["events"]["out_of_range_ts"] == n
    assert f"{n} events outside [1970-01-01, {RUN_DATE})" in " ".join(report.notes)

    from nightrec.features.events import clean_events, ts_of
    from nightrec.io import raw

    kept = clean_events(
        raw.read_raw_table(spark, raw_copy, "events"), _catalog(spark, raw_copy), RUN_DATE, s.features
    )
    assert kept.where(kept.ts >= ts_of(RUN_DATE)).count() == 0


def test_too_many_out_of_range_timestamps_fail_with_rows(spark, raw_copy, s):
    ev = read_table(raw_copy, "events").to_pandas()
    ev.loc[ev.index[: len(ev) // 10], "ts"] = pd.Timestamp("1960-01-01", tz="UTC")
    write_table(raw_copy, "events", ev)
    msg = _fail(spark, raw_copy, s)
    assert "out_of_range_ts_share column 'ts' of events" in msg and "1960-01-01" in msg
    assert "part-00000.parquet" in msg
    assert "NIGHTREC_GATES__DATA_START" in msg  # the message names the setting that moves the bound


# Scenario 6: empty day / missing partition.
def test_empty_last_day_fails_against_the_seven_run_median(spark, raw_copy, s, clean_stats):
    seed_history(s, clean_stats)
    ev = read_table(raw_copy, "events").to_pandas()
    write_table(raw_copy, "events", ev[ev["ts"].dt.strftime("%Y-%m-%d") != LAST_DAY])
    msg = _fail(spark, raw_copy, s)
    median = clean_stats["events"]["events_last_day"]
    assert f"0 events for ds={LAST_DAY}, expected >= {median * 0.5:g} (0.5 x 7-run median {median:g})" in msg


# Scenario 7: volume spike (warn by default, fail when configured).
def test_volume_spike_fails_when_configured(spark, tiny_raw, s, clean_stats):
    low = {**clean_stats, "tables": {**clean_stats["tables"]}}
    low["tables"]["events"] = {
        **low["tables"]["events"],
        "rows": clean_stats["tables"]["events"]["rows"] // 10,
    }
    seed_history(s, low)
    s.gates.volume.high_action = "fail"
    msg = _fail(spark, tiny_raw, s)
    assert "events_total_high" in msg and "events in total, expected <= " in msg and "7-run median" in msg


# Scenario 8 (raw side): a null jump and an event-type mix shift against the previous run.
def test_null_jump_and_event_mix_drift_name_feature_metric_and_threshold(spark, raw_copy, s, clean_stats):
    seed_history(s, clean_stats, days=1)
    items = read_table(raw_copy, "items")
    price = items["price"].to_pylist()
    price = [None if i % 10 < 3 else p for i, p in enumerate(price)]
    write_table(
        raw_copy, "items", items.set_column(items.schema.get_field_index("price"), "price", pa.array(price))
    )
    ev = read_table(raw_copy, "events").to_pandas()
    ev.loc[ev["event_type"] == "impression", "event_type"] = "purchase"
    write_table(raw_copy, "events", ev)
    msg = _fail(spark, raw_copy, s)
    assert "null_jump_items_price column 'price' of items" in msg and "(allowed increase 20.00%)" in msg
    assert "feature 'event_type_mix': PSI" in msg and "(threshold 0.2, action fail)" in msg


# Scenario 9: unknown items, all items unavailable.
def test_unknown_items_over_threshold_fail_with_rows_and_file(spark, raw_copy, s):
    items = read_table(raw_copy, "items")
    write_table(raw_copy, "items", items.slice(0, items.num_rows * 2 // 3))
    msg = _fail(spark, raw_copy, s)
    assert "unknown_item_share column 'item_id' of events" in msg and "refer to items missing" in msg
    assert "file: file:" in msg and "events/part-" in msg


def test_a_few_unknown_items_are_dropped_and_counted(spark, raw_copy, s):
    items = read_table(raw_copy, "items")
    write_table(raw_copy, "items", items.slice(1))
    report = _pass(spark, raw_copy, s)
    n = report.stats["events"]["unknown_items"]
    assert n > 0 and f"{n} events of items unknown to the catalog will be dropped" in report.notes


def test_all_items_unavailable_fails(spark, raw_copy, s):
    items = read_table(raw_copy, "items")
    i = items.schema.get_field_index("available")
    write_table(raw_copy, "items", items.set_column(i, "available", pa.array([False] * items.num_rows)))
    msg = _fail(spark, raw_copy, s)
    assert "available_item_share column 'available' of items" in msg and "0 of 150 items are available" in msg


def test_contract_rule_failure_names_file_column_and_rows(spark, raw_copy, s):
    ev = read_table(raw_copy, "events").to_pandas()
    ev.loc[ev.index[:7], "event_type"] = "teleport"
    write_table(raw_copy, "events", ev)
    msg = _fail(spark, raw_copy, s)
    assert "[events] expect_column_values_to_be_in_set column 'event_type' of events (7 rows)" in msg
    assert "teleport" in msg and "part-00000.parquet" in msg and "Data Docs:" in msg


def test_missing_table_folder_fails_the_gate(spark, raw_copy, s):
    shutil.rmtree(raw_copy / "users")
    assert "raw table folder users/ is missing" in _fail(spark, raw_copy, s)


def test_write_roundtrip_helper_keeps_contract_types(raw_copy):
    # The planted files must differ from the clean ones only where a test plants something.
    tbl = read_table(raw_copy, "events")
    write_table(raw_copy, "events", tbl.to_pandas())
    assert pq.read_schema(raw_copy / "events" / "part-00000.parquet").field("ts").type.tz == "UTC"
