"""Channel policies (publish.channels): what each names, what settings refuse, where a channel's lists live."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nightrec.io import lake
from nightrec.scoring.channels import parse
from nightrec.settings import Settings, for_channel


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        ("popularity_7d", "popularity", "popularity_7d"),
        ("popularity_all", "popularity", "popularity_all"),
        ("ease", "ease", "ease"),
    ],
)
def test_a_baseline_spec_names_the_policy_the_promotion_gate_reports_it_as(spec, kind, name):
    policy = parse(spec)
    assert policy is not None and policy.kind == kind and policy.name == name


def test_challenger_is_resolved_in_the_registry_not_parsed():
    assert parse("challenger") is None


@pytest.mark.parametrize(
    ("channels", "words"),
    [
        ({"default": "ease"}, "'default' always serves the live policy"),
        ({"bad/name": "ease"}, "invalid channel name 'bad/name'"),
        ({"b": "popularity_week"}, "publish.channels.b: unknown channel policy 'popularity_week'"),
        ({"b": "learned"}, "one of 'challenger', 'popularity_<N>d'"),
    ],
)
def test_settings_refuse_a_channel_map_that_could_not_be_scored(tmp_path, channels, words):
    with pytest.raises(ValidationError) as e:
        Settings(home=tmp_path, publish={"channels": channels})
    assert words in str(e.value)


def test_a_channel_has_its_own_lake_table_store_prefix_and_redis_keys_and_shares_the_rest(tmp_path):
    s = Settings(home=tmp_path, publish={"channels": {"ab-2": "popularity_30d"}})
    c = for_channel(s, "ab-2")
    assert s.recs_table == "recs" and c.recs_table == "channels/ab-2/recs"
    assert c.store == f"{s.store}/channels/ab-2"
    assert c.publish.redis_prefix == "nightrec:ab-2"
    assert (c.lake, c.mlflow_tracking_uri, c.scoring) == (s.lake, s.mlflow_tracking_uri, s.scoring)
    assert for_channel(s, "default") is s
    assert s.store == f"file://{tmp_path.resolve() / 'store'}"  # the original is not touched


def test_a_killed_channel_writer_leaves_staging_that_the_night_clears(tmp_path):
    from datetime import date

    ds = date(2026, 11, 22)
    table = for_channel(Settings(home=tmp_path, publish={"channels": {"b": "ease"}}), "b").recs_table
    staging = lake.staging_path(tmp_path / "lake", table, ds)
    staging.mkdir(parents=True)
    other = lake.staging_path(tmp_path / "lake", "recs", ds)
    other.mkdir(parents=True)
    lake.clear_all_staging(tmp_path / "lake", ds)
    assert not staging.exists() and not other.exists()
