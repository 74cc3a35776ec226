"""Seeded synthetic raw data (events, items, users) with structure a recommender can learn, popularity cannot.

Planted: 8-12 taste clusters concentrated on 2-3 categories each (plus personal noise), Zipf item popularity,
heavy-tailed user activity, sessions of impressions where the click probability follows the user's taste for
the item's category, cart and purchase funnels, a slow drift of every cluster toward one new category,
trending items in the last two weeks, items created inside the window (no events before ``created_at``), cold
users with no events, and ~0.5% replayed (exact duplicate) event rows. Everything is vectorised with numpy;
events are generated and written in user chunks, so memory stays bounded at any scale.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightrec.data import raw_files
from schemas.tables import EVENTS, ITEMS, USERS

EVENT_TYPES = (
    "impression",
    "click",
    "cart",
    "purchase",
)  # what the demo emits, of schemas.tables.EVENT_TYPES
SEGMENTS = ("budget", "mainstream", "premium", "family", "student")
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE")
_COUNTRY_P = (0.35, 0.15, 0.12, 0.1, 0.08, 0.08, 0.07, 0.05)
_TAG_WORDS = (
    "classic", "new", "eco", "premium", "budget", "compact", "family", "outdoor", "smart", "vintage",
    "sport", "kids", "deluxe", "travel", "home", "office", "gift", "bundle", "organic", "pro",
)  # fmt: skip
_US_PER_DAY = 86_400_000_000
_US_PER_S = 1_000_000
_CHUNK_EVENTS = 1_000_000  # roughly the events per Parquet part; bounds peak memory
_EVENTS_PER_SESSION = 8.4  # measured mean (impressions + engagements), to turn events_per_user into sessions
_TREND_DAYS = 14
_DRIFT = 0.3  # share of a cluster's taste that has moved to its drift category by the last day
_NOISE = 0.15  # share of a user's taste that is personal rather than their cluster's
_RANDOM_SHOWN = 0.2  # share of impressions drawn uniformly from the catalog instead of the session's category
_DUPLICATES = 0.005


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate`` wrote. Days are UTC dates; events lie in [first_day, last_day] inclusive."""

    out: Path
    fmt: str
    n_users: int
    n_cold_users: int
    n_items: int
    n_categories: int
    n_clusters: int
    n_events: int
    event_counts: dict[str, int]
    first_day: dt.date
    last_day: dt.date


@dataclass(frozen=True)
class _Catalog:
    category: np.ndarray  # (n_items,) category index
    price: np.ndarray
    created_us: np.ndarray  # µs since the epoch
    cat_share: np.ndarray  # (C,) share of the catalog per category
    # (2, n_items) cumulative popularity along items sorted by category; row 1 with the trending boost
    cdf: np.ndarray
    order: np.ndarray  # item indices sorted by category
    bounds: np.ndarray  # (C + 1,) start of each category's run in ``order``
    oldest: np.ndarray  # (C,) the earliest created item of each category


@dataclass(frozen=True)
class _Population:
    cluster: np.ndarray  # (n_users,)
    taste: np.ndarray  # (K, n_days, C) cluster taste per day (drifting)
    personal: np.ndarray  # (n_users, C)
    activity: np.ndarray  # (n_users,) mean 1, lognormal
    cold: np.ndarray  # (n_users,) bool


def generate(
    n_users: int,
    n_items: int,
    n_days: int,
    out: Path,
    *,
    seed: int = 0,
    events_per_user: float = 100.0,
    end_date: dt.date = dt.date(2026, 11, 22),
    n_categories: int = 20,
    fmt: str = "parquet",
    cold_users: float = 0.03,
) -> GenerateSummary:
    """Write ``out/events/``, ``out/items/`` and ``out/users/`` in the raw contract (same args, same bytes).

    Args:
        n_users: Users, cold ones included.
        n_items: Catalog size (at least ``n_categories``).
        n_days: Days of events, ending the day before ``end_date``.
        out: Output root.
        seed: Seed of every random draw.
        events_per_user: Approximate mean events per non-cold user (heavy-tailed across users).
        end_date: First day after the window (the natural run date).
        n_categories: Item categories (at least 3).
        fmt: ``parquet``, ``csv`` or ``jsonl``.
        cold_users: Share of users with no events at all.

    Returns:
        Counts, the day range and the output path.

    Raises:
        ValueError: impossible sizes or an unknown format.
    """
    raw_files.check_format(fmt)
    if n_users < 1 or n_days < 1 or n_categories < 3 or n_items < n_categories or not 0 <= cold_users <= 1:
        raise ValueError(
            "need n_users >= 1, n_days >= 1, n_categories >= 3, n_items >= n_categories, "
            f"0 <= cold_users <= 1; got {n_users=}, {n_days=}, {n_categories=}, {n_items=}, {cold_users=}"
        )
    out = Path(out)
    rng = np.random.default_rng(seed)
    first_day = end_date - dt.timedelta(days=n_days)
    start_us = _epoch_us(first_day)
    catalog, items_tbl = _make_catalog(rng, n_items, n_categories, start_us, n_days)
    pop, users_tbl = _make_population(rng, n_users, n_days, catalog.cat_share, cold_users, start_us)
    raw_files.write_table(items_tbl, out, ITEMS, fmt)
    raw_files.write_table(users_tbl, out, USERS, fmt)

    raw_files.prepare_table_dir(out, EVENTS)
    user_ids, item_ids = users_tbl["user_id"].combine_chunks(), items_tbl["item_id"].combine_chunks()
    chunk = max(1, int(_CHUNK_EVENTS / max(events_per_user, 1.0)))
    counts, session_base = np.zeros(len(EVENT_TYPES), np.int64), 0
    for part, lo in enumerate(range(0, n_users, chunk)):
        crng = np.random.default_rng([seed, 1, part])
        uidx = np.arange(lo, min(lo + chunk, n_users))
        ev = _chunk_events(crng, uidx, pop, catalog, n_days, events_per_user, start_us)
        counts += np.bincount(ev["code"], minlength=len(EVENT_TYPES))
        raw_files.write_part(_events_table(ev, user_ids, item_ids, session_base), out, EVENTS, part, fmt)
        session_base += int(ev["session"].max()) + 1 if len(ev["session"]) else 0
    return GenerateSummary(
        out=out,
        fmt=fmt,
        n_users=n_users,
        n_cold_users=int(pop.cold.sum()),
        n_items=n_items,
        n_categories=n_categories,
        n_clusters=pop.taste.shape[0],
        n_events=int(counts.sum()),
        event_counts=dict(zip(EVENT_TYPES, counts.tolist(), strict=True)),
        first_day=first_day,
        last_day=end_date - dt.timedelta(days=1),
    )


def _epoch_us(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC).timestamp()) * _US_PER_S


def _make_catalog(rng, n_items, n_cat, start_us, n_days) -> tuple[_Catalog, pa.Table]:
    cat_p = 1.0 / np.arange(1, n_cat + 1) ** 0.8
    cat_p = (cat_p / cat_p.sum())[rng.permutation(n_cat)]
    # Every category gets one item first, so a session's category always has something to show.
    category = np.concatenate([rng.permutation(n_cat), rng.choice(n_cat, n_items - n_cat, p=cat_p)])
    pop = (rng.permutation(n_items) + 1.0) ** -1.0  # Zipf over a random order: ids carry no popularity
    trend_pop = pop.copy()
    trending = rng.choice(n_items, max(3, n_items // 100), replace=False)
    cat_max = np.zeros(n_cat)
    np.maximum.at(cat_max, category, pop)
    trend_pop[trending] = 1.5 * cat_max[category[trending]]
    price = np.round(np.exp(rng.uniform(2.0, 5.0, n_cat)[category] + 0.5 * rng.standard_normal(n_items)), 2)
    available = rng.random(n_items) >= 0.03
    new = rng.random(n_items) < 0.15
    created = np.where(
        new,
        start_us + rng.integers(0, max(n_days - 1, 1) * _US_PER_DAY, n_items),
        start_us - rng.integers(1, 365 * _US_PER_DAY, n_items),
    )
    order = np.argsort(category, kind="stable")
    catalog = _Catalog(
        category=category,
        price=price,
        created_us=created,
        cat_share=np.bincount(category, minlength=n_cat) / n_items,
        cdf=np.cumsum(np.stack([pop[order], trend_pop[order]]), axis=1),
        order=order,
        bounds=np.searchsorted(category[order], np.arange(n_cat + 1)),
        oldest=np.lexsort((created, category))[np.searchsorted(category[order], np.arange(n_cat))],
    )
    tbl = pa.table(
        {
            "item_id": raw_files.string_ids("i", n_items),
            "category": pc.take(pa.array([f"cat_{c:02d}" for c in range(n_cat)]), pa.array(category)),
            "tags": _tags(rng, category, n_cat),
            "price": price,
            "available": available,
            "created_at": raw_files.timestamps(created),
            "attributes": raw_files.constant_key_map(("brand",), [_brands(rng, category)], n_items),
        }
    )
    return catalog, tbl


def _brands(rng, category: np.ndarray) -> pa.Array:
    """Up to 6 brands per category, a few of them dominant."""
    brand = np.minimum(rng.geometric(0.4, len(category)) - 1, 5)
    return pa.array([f"brand_{c:02d}_{b}" for c, b in zip(category.tolist(), brand.tolist(), strict=True)])


def _tags(rng, category: np.ndarray, n_cat: int) -> pa.ListArray:
    """2-3 tags per item, drawn from a 4-word pool tied to its category."""
    pools = np.stack([rng.choice(len(_TAG_WORDS), 4, replace=False) for _ in range(n_cat)])
    n = len(category)
    k = rng.integers(2, 4, n)
    shuffled = np.take_along_axis(pools[category], np.argsort(rng.random((n, 4)), axis=1), axis=1)
    values = shuffled[np.arange(4)[None, :] < k[:, None]]
    offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.take(pa.array(_TAG_WORDS), pa.array(values)))


def _make_population(rng, n_users, n_days, cat_share, cold_share, start_us) -> tuple[_Population, pa.Table]:
    n_cat = len(cat_share)
    k = int(rng.integers(8, 13))
    cluster = rng.choice(k, n_users, p=rng.dirichlet(np.full(k, 3.0)))
    base, drift = np.tile(0.15 * cat_share, (k, 1)), np.zeros((k, n_cat))
    # Focus categories are dealt round a shuffled deck, so clusters overlap little and popularity cannot stand
    # in for taste; the drift target is one more card, outside the cluster's focus.
    deck, dealt = np.tile(rng.permutation(n_cat), 4 * k), 0
    for c in range(k):  # one draw per cluster (8-12), not per user
        n_focus = int(rng.integers(2, min(3, n_cat - 1) + 1))
        focus, dealt = deck[dealt : dealt + n_focus], dealt + n_focus
        base[c, focus] += 0.85 * rng.dirichlet(np.full(n_focus, 4.0))
        drift[c, rng.choice(np.setdiff1d(np.arange(n_cat), focus))] = 1.0
    frac = (np.arange(n_days) / max(n_days - 1, 1))[None, :, None] * _DRIFT
    pop = _Population(
        cluster=cluster,
        taste=(1 - frac) * base[:, None, :] + frac * drift[:, None, :],
        personal=rng.dirichlet(np.full(n_cat, 0.5), n_users),
        activity=rng.lognormal(-0.5, 1.0, n_users),
        cold=rng.random(n_users) < cold_share,
    )
    # A segment is mostly its cluster's, so it is a (weak) cold-start signal.
    segment = np.where(
        rng.random(n_users) < 0.7,
        rng.integers(0, len(SEGMENTS), k)[cluster],
        rng.integers(0, len(SEGMENTS), n_users),
    )
    country = rng.choice(len(COUNTRIES), n_users, p=_COUNTRY_P)
    recent = min(n_days, 14) * _US_PER_DAY  # cold users are mostly recent sign-ups
    end_us = start_us + n_days * _US_PER_DAY
    signup = np.where(
        pop.cold,
        end_us - rng.integers(1, recent, n_users),
        start_us - rng.integers(1, 730 * _US_PER_DAY, n_users),
    )
    attrs = [pc.take(pa.array(COUNTRIES), pa.array(country)), pc.take(pa.array(SEGMENTS), pa.array(segment))]
    tbl = pa.table(
        {
            "user_id": raw_files.string_ids("u", n_users),
            "signup_at": raw_files.timestamps(signup),
            "attributes": raw_files.constant_key_map(("country", "segment"), attrs, n_users),
        }
    )
    return pop, tbl


def _sample_items(rng, cat: np.ndarray, trend: np.ndarray, catalog: _Catalog) -> np.ndarray:
    """One item per row from category ``cat`` by popularity (trending weights where ``trend``)."""
    lo, hi = catalog.bounds[cat], catalog.bounds[cat + 1]
    row = trend.astype(np.intp)
    cdf = catalog.cdf
    start = np.where(lo > 0, cdf[row, np.maximum(lo - 1, 0)], 0.0)
    target = start + rng.random(len(cat)) * (cdf[row, hi - 1] - start)
    pos = np.where(trend, np.searchsorted(cdf[1], target, "right"), np.searchsorted(cdf[0], target, "right"))
    return catalog.order[np.clip(pos, lo, hi - 1)]


def _chunk_events(rng, uidx, pop: _Population, catalog: _Catalog, n_days, events_per_user, start_us) -> dict:
    """Events of users ``uidx`` as time-sorted columns, ~0.5% replayed; sessions count from 0 per chunk."""
    s_user, s_day, s_start, taste = _sessions(rng, uidx, pop, n_days, events_per_user, start_us)
    sess, item, ts, intent = _impressions(rng, taste, s_day, s_start, n_days, catalog)
    n = len(sess)
    # Clicks follow the user's taste for the item's category: unclicked impressions are informative negatives.
    rel = taste[sess, catalog.category[item]] / taste[sess].max(axis=1)
    click = intent | (rng.random(n) < 0.02 + 0.6 * rel**2)
    cart = click & (rng.random(n) < 0.3)
    buy = cart & (rng.random(n) < 0.4)
    t_click = ts + rng.integers(2, 60, n) * _US_PER_S
    t_cart = t_click + rng.integers(10, 180, n) * _US_PER_S
    t_buy = t_cart + rng.integers(30, 300, n) * _US_PER_S
    masks, times = (np.ones(n, bool), click, cart, buy), (ts, t_click, t_cart, t_buy)
    rows = np.concatenate([np.flatnonzero(m) for m in masks])
    code = np.repeat(np.arange(len(EVENT_TYPES)), [int(m.sum()) for m in masks])
    when = np.concatenate([t[m] for t, m in zip(times, masks, strict=True)])
    dup = rng.integers(0, len(rows), rng.binomial(len(rows), _DUPLICATES)) if len(rows) else np.empty(0, int)
    pick = np.concatenate([np.arange(len(rows)), dup])
    pick = pick[np.argsort(when[pick], kind="stable")]
    rows, code = rows[pick], code[pick]
    value = np.where(code == EVENT_TYPES.index("purchase"), catalog.price[item[rows]], np.nan)
    user, session = s_user[sess[rows]], sess[rows]
    return {
        "user": user,
        "item": item[rows],
        "code": code,
        "ts": when[pick],
        "value": value,
        "session": session,
    }


def _sessions(rng, uidx, pop: _Population, n_days, events_per_user, start_us):
    """Per session: user, day, start (µs) and the user's taste that day (rows of a (sessions, C) matrix)."""
    # At least 3 sessions, each with one certain click, so every non-cold user has >= 3 engaged events.
    n_sess = np.maximum(rng.poisson(pop.activity[uidx] * events_per_user / _EVENTS_PER_SESSION), 3)
    n_sess[pop.cold[uidx]] = 0
    s_user = np.repeat(uidx, n_sess)
    s_day = rng.integers(0, n_days, len(s_user))
    # Sessions end within their day (an hour is kept free), so no event falls outside the window.
    s_start = start_us + s_day * _US_PER_DAY + rng.integers(0, _US_PER_DAY - 3600 * _US_PER_S, len(s_user))
    taste = (1 - _NOISE) * pop.taste[pop.cluster[s_user], s_day] + _NOISE * pop.personal[s_user]
    return s_user, s_day, s_start, taste


def _impressions(rng, taste, s_day, s_start, n_days, catalog: _Catalog):
    """Items shown per session: an intent item and popular ones from a category drawn from taste, some random.

    Returns session index, item, time and whether it is the intent item, one row per distinct shown item.
    """
    cum = np.cumsum(taste, axis=1)
    s_cat = np.minimum((cum < rng.random(len(taste))[:, None] * cum[:, -1:]).sum(axis=1), taste.shape[1] - 1)
    n_shown = np.minimum(3 + rng.poisson(3.0, len(taste)), 12)
    sess = np.repeat(np.arange(len(taste)), n_shown)
    intent = np.zeros(len(sess), bool)
    intent[np.cumsum(n_shown) - n_shown] = True
    ts = s_start[sess] + rng.integers(0, 600 * _US_PER_S, len(sess))
    trend = s_day[sess] >= n_days - _TREND_DAYS
    item = _sample_items(rng, s_cat[sess], trend, catalog)
    rand = (rng.random(len(sess)) < _RANDOM_SHOWN) & ~intent
    item[rand] = rng.integers(0, len(catalog.category), int(rand.sum()))
    for _ in range(3):  # redraw items that did not exist yet, then fall back to the category's oldest item
        bad = np.flatnonzero(catalog.created_us[item] > ts)
        item[bad] = _sample_items(rng, s_cat[sess[bad]], trend[bad], catalog)
    bad = np.flatnonzero(catalog.created_us[item] > ts)
    item[bad] = catalog.oldest[s_cat[sess[bad]]]  # still too new only if the whole category is: dropped below
    _, first = np.unique(sess.astype(np.int64) * len(catalog.category) + item, return_index=True)
    keep = np.zeros(len(sess), bool)
    keep[first] = True  # the first showing of an item in a session (the intent item comes first)
    keep &= catalog.created_us[item] <= ts
    return sess[keep], item[keep], ts[keep], intent[keep]


def _events_table(ev: dict, user_ids: pa.Array, item_ids: pa.Array, session_base: int) -> pa.Table:
    session = pc.cast(pa.array(ev["session"].astype(np.int64) + session_base), pa.string())
    return pa.table(
        {
            "user_id": pc.take(user_ids, pa.array(ev["user"])),
            "item_id": pc.take(item_ids, pa.array(ev["item"])),
            "event_type": pc.take(pa.array(EVENT_TYPES), pa.array(ev["code"])),
            "ts": raw_files.timestamps(ev["ts"]),
            "value": pa.array(ev["value"], mask=np.isnan(ev["value"])),
            "session_id": pc.binary_join_element_wise("s", session, ""),
        }
    )
