"""The night report's list figures, against small hand-computed examples and brute force."""

from __future__ import annotations

import itertools
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from nightrec.evaluation.list_metrics import ListStats, churn, gini, personalisation


def _lists(rows: dict[str, list[str]], source: str = "model") -> pd.DataFrame:
    out = [(u, r + 1, i, source) for u, items in rows.items() for r, i in enumerate(items)]
    return pd.DataFrame(out, columns=["user_id", "rank", "item_id", "source"])


ITEMS = pd.DataFrame(
    {"item_id": ["a", "b", "c", "d"], "popularity": [6, 2, 0, 0], "category": ["x", "x", "y", "z"]}
)


def test_gini_of_equal_counts_is_zero_and_of_one_item_is_near_one():
    assert gini(np.array([3, 3, 3, 3])) == 0.0
    # Counts (0, 0, 0, 4): G = 2*(4*4)/(4*4) - 5/4 = 0.75, the largest a 4-item catalog allows.
    assert gini(np.array([4, 0, 0, 0])) == pytest.approx(0.75)
    assert gini(np.array([0, 0])) == 0.0


def test_figures_of_three_small_lists_match_the_hand_computation():
    stats = ListStats(ITEMS, k=2)
    stats.add(_lists({"u1": ["a", "b"], "u2": ["a", "c"]}))
    stats.add(_lists({"u3": ["a", "b"]}, source="fallback"))
    m = stats.metrics()
    # Counts: a 3, b 2, c 1, d 0 over 6 rows.
    assert m["users"] == 3 and m["coverage"] == pytest.approx(3 / 4)
    assert m["gini"] == pytest.approx(2 * (0 * 1 + 1 * 2 + 2 * 3 + 3 * 4) / (4 * 6) - 5 / 4)
    assert m["arp"] == pytest.approx((3 * 6 + 2 * 2 + 0) / 6)
    # p(i): popularity with zeros counted as one: a 6/10, b 2/10, c 1/10.
    novelty = (3 * -math.log2(0.6) + 2 * -math.log2(0.2) + 1 * -math.log2(0.1)) / 6
    assert m["novelty"] == pytest.approx(novelty)
    # Pairs: (u1,u2) share a: 1/2; (u1,u3) share a, b: 2/2; (u2,u3) share a: 1/2. Mean 2/3.
    assert m["personalisation"] == pytest.approx(1 - 2 / 3)
    assert m["fallback_share"] == pytest.approx(1 / 3)
    mix = stats.category_mix()
    assert mix.to_dict() == pytest.approx({"x": 5 / 6, "y": 1 / 6, "z": 0.0})


def test_personalisation_from_counts_equals_the_pairwise_mean_on_random_lists():
    rng = np.random.default_rng(4)
    k, lists = 5, [rng.choice(30, 5, replace=False) for _ in range(40)]
    counts = np.bincount(np.concatenate(lists), minlength=30)
    pairwise = np.mean([len(set(a) & set(b)) / k for a, b in itertools.combinations(lists, 2)])
    assert personalisation(counts, len(lists), k) == pytest.approx(1 - pairwise)


def _rbo_brute(a: list, b: list, k: int, p: float = 0.9) -> float:
    s = sum(p ** (d - 1) * len(set(a[:d]) & set(b[:d])) / d for d in range(1, k + 1))
    return (1 - p) * s / (1 - p**k)


def test_churn_equals_a_brute_force_computation_on_random_lists():
    rng = np.random.default_rng(11)
    k, catalog = 10, 25
    new, live = {}, {}
    for u in range(200):
        new[f"u{u}"] = [f"i{i}" for i in rng.choice(catalog, k, replace=False)]
        if u % 7:  # some users have no live list
            n = k if u % 5 else 4  # and some live lists are short
            live[f"u{u}"] = [f"i{i}" for i in rng.choice(catalog, n, replace=False)]
    live["only-live"] = ["i1", "i2"]
    got = churn(_lists(new), _lists(live), k)
    assert set(got.index) == set(new) & set(live)
    for u, row in got.iterrows():
        a, b = set(new[u]), set(live[u])
        assert row["jaccard"] == pytest.approx(len(a & b) / len(a | b)), u
        assert row["rbo"] == pytest.approx(_rbo_brute(new[u], live[u], k)), u


def test_identical_lists_have_rbo_one_and_disjoint_lists_zero():
    same = _lists({"u": ["a", "b", "c"]})
    assert churn(same, same, 3)["rbo"].iloc[0] == pytest.approx(1.0)
    assert churn(same, _lists({"u": ["x", "y", "z"]}), 3)["rbo"].iloc[0] == 0.0
    # The same items in reverse order: found, but deeper; between the two.
    rev = churn(same, _lists({"u": ["c", "b", "a"]}), 3)
    assert rev["jaccard"].iloc[0] == 1.0 and 0.0 < rev["rbo"].iloc[0] < 1.0


def test_churn_figures_summarise_the_per_user_distribution():
    stats = ListStats(ITEMS, k=2)
    new = _lists({"u1": ["a", "b"], "u2": ["a", "c"], "u3": ["c", "d"]})
    live = _lists({"u1": ["a", "b"], "u2": ["b", "d"], "u3": ["c", "a"]})
    stats.add(new, live)
    m = stats.metrics()
    # Jaccard: u1 1, u2 0 (replaced), u3 1/3.
    assert m["churn_users"] == 3 and m["jaccard_mean"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert m["replaced_share"] == pytest.approx(1 / 3)
    assert stats.churn_histogram().sum() == 3


def test_the_night_report_is_one_offline_page_with_tables_charts_and_rules():
    from nightrec.evaluation.list_metrics import NightLists
    from nightrec.evaluation.night_report import NightReport, RuleRow, render

    new, live = ListStats(ITEMS, k=2), ListStats(ITEMS, k=2)
    tonight = _lists({"u1": ["a", "b"], "u2": ["a", "c"]})
    before = _lists({"u1": ["a", "d"], "u2": ["b", "c"]})
    new.add(tonight, before)
    live.add(before)
    page = render(
        NightReport(
            date(2026, 11, 22),
            "learned",
            NightLists(new, live, "recs/ds=2026-11-21/run=r/manifest.json"),
            history=[("2026-11-21", {"coverage": 1.0, "gini": 0.1})],
            rules=[RuleRow("change_gini", False, "fail", "gini <0.9> tonight")],
        )
    )
    assert page.startswith("<!doctype html>") and "http" not in page  # nothing fetched from a network
    assert page.count("data:image/png;base64,") == 4  # churn, popularity, categories, history
    assert "No slices" in page
    assert "recs/ds=2026-11-21/run=r/manifest.json" in page and 'class="fail"' in page
    assert "gini &lt;0.9&gt; tonight" in page  # text is escaped
    # The headline table: tonight's coverage 3/4, the live lists' 4/4.
    assert "<td>catalog coverage</td><td>75.0%</td><td>100.0%</td>" in page


def test_the_report_shows_the_slices_with_their_intervals():
    from nightrec.evaluation.list_metrics import NightLists
    from nightrec.evaluation.night_report import NightReport, render
    from nightrec.evaluation.slices import Slice, SliceReport

    stats = ListStats(ITEMS, k=2)
    stats.add(_lists({"u1": ["a", "b"]}))
    slices = SliceReport(
        policy="learned",
        k=10,
        slices=[
            Slice(cut="activity", name="1-4", n=30, ndcg=0.2, ndcg_ci=0.05, recall=0.3, recall_ci=0.06),
            Slice(
                cut="item_popularity",
                name="tail (50-100%)",
                n=40,
                ndcg=None,
                ndcg_ci=None,
                recall=0.1,
                recall_ci=None,
            ),
        ],  # fmt: skip
        gaps={"activity": 0.12},
    )
    page = render(NightReport(date(2026, 11, 22), "learned", NightLists(stats), slices=slices))
    assert page.count("data:image/png;base64,") == 3  # popularity, categories, slices (no churn, no history)
    assert "<td>0.200 ± 0.050</td>" in page and "tail (50-100%)" in page and "activity 0.120" in page


def test_a_live_list_holding_an_item_twice_is_matched_once():
    new = _lists({"u": ["a", "b"]})
    live = _lists({"u": ["a", "a", "c"]})
    got = churn(new, live, 3)
    # Shared {a}; |new| + |live rows| - shared = 2 + 3 - 1 = 4 (the duplicate counts as a row of the list).
    assert got["jaccard"].iloc[0] == pytest.approx(1 / 4)


def test_encoding_parquet_dictionaries_gives_the_rows_of_plain_hashing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nightrec.io.codes import encode
    from nightrec.validation.list_figures import read_lists

    rng = np.random.default_rng(3)
    for f in range(3):  # several files, each of several row groups, read back in batches
        frame = _lists(
            {f"u{rng.integers(40)}": list(rng.choice(list("abcdefgh"), 4, replace=False)) for _ in range(30)}
        )
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False),
            tmp_path / f"part-{f}.parquet",
            row_group_size=7,
        )
    table = read_lists(tmp_path)
    assert pa.types.is_dictionary(table["user_id"].type) and table["user_id"].num_chunks > 1
    for column in ["user_id", "item_id", "source"]:
        values, code = encode(table[column])
        plain = table[column].cast(pa.string()).to_pylist()
        assert values.to_pylist() == list(dict.fromkeys(values.to_pylist()))  # distinct
        assert [values[c].as_py() for c in code] == plain
        plain_values, plain_code = encode(pa.chunked_array([pa.array(plain)]))
        assert [plain_values[c].as_py() for c in plain_code] == plain
