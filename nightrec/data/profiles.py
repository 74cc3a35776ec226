"""Generator profiles shaped like real logs rather than like our own demo: what real data looks like to us.

- ``ratings``: explicit 1-5 ratings only (no impressions), dates in the late 1990s, users who arrive on one day,
  rate a batch of titles and mostly never return (many have a single day of history), a few hundred arrivals
  in a good week and far fewer in a sparse one, and items whose popularity rises at release and fades, so
  recent popularity is the baseline to beat (the MovieLens shape).
- ``clicks``: the demo generator's clicks, nothing else (no impressions, carts or purchases).
- ``purchases``: its purchases only (a thin, price-valued log).
- ``default``: the demo generator as it is (impressions, clicks, carts, purchases).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nightrec.data import raw_files, synthetic
from schemas.tables import EVENTS

PROFILES = ("default", "ratings", "clicks", "purchases")
RATINGS_END = dt.date(1998, 4, 23)  # ml-100k's last rating is on 1998-04-22
_US_PER_DAY = 86_400_000_000
_RELEASE_DECAY_DAYS = 45.0  # an item's pull halves roughly every month after release
_SINGLE_DAY_USERS = 0.55  # share of users whose whole history is one day


@dataclass(frozen=True)
class ProfileSummary:
    profile: str
    out: Path
    n_users: int
    n_items: int
    n_events: int
    event_counts: dict[str, int]
    first_day: dt.date
    last_day: dt.date

    def __str__(self) -> str:
        mix = ", ".join(f"{n} {kind}" for kind, n in self.event_counts.items() if n)
        return (
            f"profile {self.profile}: wrote {self.n_events} events ({mix}) from {self.first_day} to "
            f"{self.last_day}, {self.n_users} users and {self.n_items} items, to {self.out}. "
            f"Run it: nightrec run --data {self.out}"
        )


def generate(
    profile: str,
    n_users: int,
    n_items: int,
    n_days: int,
    out: Path,
    *,
    seed: int = 0,
    events_per_user: float = 60.0,
    fmt: str = "parquet",
    end_date: dt.date | None = None,
) -> ProfileSummary:
    """Write ``out/events|items|users`` in the raw contract, shaped as ``profile`` says (same args, same bytes).

    Raises:
        ValueError: an unknown profile, impossible sizes or an unknown format.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    out = Path(out)
    if profile == "ratings":
        return _ratings(n_users, n_items, n_days, out, seed, events_per_user, fmt, end_date or RATINGS_END)
    end = end_date or dt.date(2026, 11, 22)
    s = synthetic.generate(
        n_users, n_items, n_days, out, seed=seed, events_per_user=events_per_user, fmt="parquet", end_date=end
    )
    counts = dict(s.event_counts)
    if profile == "default" and fmt == "parquet":
        return ProfileSummary(profile, out, n_users, n_items, s.n_events, counts, s.first_day, s.last_day)
    tables = {t.name: pq.read_table(out / t.name) for t in (EVENTS, synthetic.ITEMS, synthetic.USERS)}
    if profile != "default":
        keep = "click" if profile == "clicks" else "purchase"
        events = tables[EVENTS.name]
        tables[EVENTS.name] = events.filter(pc.equal(events["event_type"], keep))
        counts = {keep: tables[EVENTS.name].num_rows}
    for t in (EVENTS, synthetic.ITEMS, synthetic.USERS):
        raw_files.write_table(tables[t.name], out, t, fmt)
    return ProfileSummary(
        profile, out, n_users, n_items, sum(counts.values()), counts, s.first_day, s.last_day
    )


def _ratings(n_users, n_items, n_days, out, seed, per_user, fmt, end_date) -> ProfileSummary:
    raw_files.check_format(fmt)
    if n_users < 1 or n_days < 14 or n_items < 20:
        raise ValueError(
            f"the ratings profile needs n_users >= 1, n_days >= 14, n_items >= 20; got {n_users=}, {n_days=}, {n_items=}"
        )
    rng = np.random.default_rng([seed, 7])
    first_day = end_date - dt.timedelta(days=n_days)
    start_us = synthetic._epoch_us(first_day)
    # The catalog and the taste clusters are the demo generator's (genres as categories), so the structure a
    # model can find is the same kind; what differs is how users meet it.
    catalog, items_tbl = synthetic._make_catalog(rng, n_items, 18, start_us, n_days)
    pop, users_tbl = synthetic._make_population(rng, n_users, n_days, catalog.cat_share, 0.0, start_us)
    quality = rng.normal(0.0, 0.6, n_items)
    base = (rng.permutation(n_items) + 1.0) ** -0.9
    # Release day of each item: a third before the window, the rest spread over it.
    release = np.where(
        rng.random(n_items) < 0.35, -rng.integers(1, 400, n_items), rng.integers(0, n_days, n_items)
    )
    # Sparse weeks: each week's arrivals are scaled by a factor between 0.15 and 1.6.
    n_weeks = -(-n_days // 7)
    week_rate = rng.choice([0.15, 0.5, 1.0, 1.6], n_weeks, p=[0.2, 0.25, 0.35, 0.2])
    day_p = np.repeat(week_rate, 7)[:n_days]
    arrival = rng.choice(n_days, n_users, p=day_p / day_p.sum())
    n_ratings = np.clip(
        rng.lognormal(np.log(per_user) - 0.5, 1.0, n_users), 20, max(20, n_items // 4)
    ).astype(int)
    users, items, days, values = [], [], [], []
    for u in range(n_users):
        a = arrival[u]
        if rng.random() < _SINGLE_DAY_USERS or a >= n_days - 1:
            u_days = np.array([a])
        else:
            later = a + np.cumsum(rng.geometric(1 / 12, rng.integers(1, 6)))
            u_days = np.concatenate([[a], later[later < n_days]])
        taste = (1 - 0.15) * pop.taste[pop.cluster[u], a] + 0.15 * pop.personal[u]
        taste_i = taste[catalog.category]
        counts = np.bincount(rng.integers(0, len(u_days), n_ratings[u]), minlength=len(u_days))
        counts[0] += n_ratings[u] - counts.sum()
        seen = np.zeros(n_items, bool)
        for d, k in zip(u_days, counts, strict=True):
            age = d - release
            pull = np.where(
                age >= 0, base * np.exp(-np.maximum(age, 0) / _RELEASE_DECAY_DAYS) + 0.05 * base, 0.0
            )
            w = pull * taste_i * ~seen
            k = int(min(k, (w > 0).sum()))
            if k == 0:
                continue
            chosen = rng.choice(n_items, k, replace=False, p=w / w.sum())
            seen[chosen] = True
            affinity = taste_i[chosen] / taste_i.max()
            r = np.clip(np.rint(2.7 + 2.0 * affinity + quality[chosen] + rng.normal(0, 0.8, k)), 1, 5)
            users.append(np.full(k, u))
            items.append(chosen)
            days.append(np.full(k, d))
            values.append(r)
    user = np.concatenate(users)
    day = np.concatenate(days)
    # A batch of ratings spread over an evening: one to a few minutes apart.
    ts = start_us + day * _US_PER_DAY + rng.integers(0, _US_PER_DAY - 3_600_000_000, len(user))
    order = np.lexsort((ts, user))
    ev = {
        "user": user[order],
        "item": np.concatenate(items)[order],
        "ts": ts[order],
        "value": np.concatenate(values)[order],
    }
    # Items have no release before the window's start in the catalog: created_at is their release.
    created = start_us + release * _US_PER_DAY
    items_tbl = items_tbl.set_column(
        items_tbl.schema.get_field_index("created_at"), "created_at", raw_files.timestamps(created)
    )
    raw_files.write_table(items_tbl, out, synthetic.ITEMS, fmt)
    raw_files.write_table(users_tbl, out, synthetic.USERS, fmt)
    events = pa.table(
        {
            "user_id": pc.take(users_tbl["user_id"].combine_chunks(), pa.array(ev["user"])),
            "item_id": pc.take(items_tbl["item_id"].combine_chunks(), pa.array(ev["item"])),
            "event_type": pa.array(np.full(len(ev["user"]), "rating", dtype=object), pa.string()),
            "ts": raw_files.timestamps(ev["ts"]),
            "value": pa.array(ev["value"].astype(np.float64)),
            "session_id": pa.nulls(len(ev["user"]), pa.string()),
        }
    )
    raw_files.write_table(events, out, EVENTS, fmt)
    return ProfileSummary(
        "ratings",
        out,
        n_users,
        n_items,
        events.num_rows,
        {"rating": events.num_rows},
        first_day,
        end_date - dt.timedelta(days=1),
    )
