"""Item popularity (and age) as of each day, for examples that span days.

The lake's ranking examples carry each item's popularity bucket as of the holdout start (``eval_start``):
for an example a week earlier, that count includes the week that followed it, its own engagement among
them. Serving never sees its own future, so the ranker would learn to trust popularity more than it should.
This table gives the bucket as of the start of each day instead, from the same events, window and rule as
``features.point_in_time.build_item_features`` (weighted engagement over the last ``popularity_days``,
``floor(log2(popularity + 1))``, capped at 31).

The two-tower's item-state logit reads the same bucket and the item's age (days since its first engagement) as
of each example's day (``ItemState``, ``train.retrieval_item_state``); it serves with both as of the run date.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from nightrec.io import lake
from nightrec.models.configs import AGE_BUCKETS
from schemas.tables import INTERACTIONS

_DAY_US = 86_400 * 1_000_000
MAX_BUCKET = 31
_NEVER = 2**40


def day_number(d: date) -> int:
    """Days since 1970-01-01 (the ``day`` of ranking examples)."""
    return (d - date(1970, 1, 1)).days


def date_of(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


@dataclass(frozen=True)
class DailyPopularity:
    """``buckets[d, i]``: the popularity bucket of item ``i`` at the start of day ``first_day + d``."""

    first_day: int  # day number of row 0
    buckets: torch.Tensor  # int64 [n_days, n_items]

    def at(self, day: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """The bucket of each ``item`` on its ``day`` (same shapes; days outside the table are clamped)."""
        n_days, n_items = self.buckets.shape
        row = (day - self.first_day).clamp(0, n_days - 1)
        return self.buckets[row, item.clamp(0, n_items - 1)]

    def to(self, device: torch.device | str) -> DailyPopularity:
        return DailyPopularity(self.first_day, self.buckets.to(device))


def daily_popularity(
    lake_root: str | Path, ds: date, first: date, last: date, popularity_days: int, n_items: int
) -> DailyPopularity:
    """Buckets for the days ``first`` .. ``last`` (inclusive), from ``ds``'s interactions."""
    since = first - timedelta(days=popularity_days)
    item, us, weight = _engaged(lake_root, ds, last, since)
    return _daily(item, us, weight, first, last, popularity_days, n_items)


def _engaged(
    lake_root: str | Path, ds: date, before: date, since: date | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(item_idx, ts in microseconds, weight)`` of ``ds``'s engaged interactions in ``[since, before)``."""
    path = lake.require_partition(lake_root, INTERACTIONS.name, ds)
    ts = pc.field("ts")
    flt = (ts < _utc(before)) & (pc.field("weight") > 0) & (pc.field("item_idx") > 0)
    if since is not None:
        flt = flt & (ts >= _utc(since))
    t = pads.dataset(str(path), format="parquet").to_table(columns=["item_idx", "ts", "weight"], filter=flt)
    us = t["ts"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    return t["item_idx"].to_numpy().astype(np.int64), us, t["weight"].to_numpy()


def _daily(
    item: np.ndarray,
    us: np.ndarray,
    weight: np.ndarray,
    first: date,
    last: date,
    popularity_days: int,
    n_items: int,
) -> DailyPopularity:
    n_days = (last - first).days + 1
    start = first - timedelta(days=popularity_days)
    day = us // _DAY_US - day_number(start)  # 0 = start
    keep = (item < n_items) & (day >= 0)
    span = n_days + popularity_days
    daily = np.zeros((span, n_items), dtype=np.float64)
    np.add.at(daily, (day[keep], item[keep]), weight[keep])
    cum = np.vstack([np.zeros((1, n_items)), np.cumsum(daily, axis=0)])
    # Row k of the result is day first + k: the window [first + k - P, first + k) is rows k .. k + P of daily.
    window = cum[popularity_days : popularity_days + n_days] - cum[:n_days]
    buckets = np.minimum(np.floor(np.log2(np.maximum(window, 0.0) + 1.0)), MAX_BUCKET).astype(np.int64)
    return DailyPopularity(day_number(first), torch.from_numpy(buckets))


def _utc(d: date) -> pa.Scalar:
    return pa.scalar(datetime.combine(d, time(0), tzinfo=UTC), pa.timestamp("us", tz="UTC"))


@dataclass(frozen=True)
class ItemState:
    """Each item's popularity bucket and age bucket at the start of any day of a range (see the module doc)."""

    popularity: DailyPopularity
    first_day: torch.Tensor  # int64 [n_items]: day number of the first engagement (huge when never)

    def at(self, day: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pop_bucket, age_bucket)`` of each ``item`` at the start of its ``day`` (same shapes)."""
        item = item.clamp(0, self.first_day.shape[0] - 1)
        return self.popularity.at(day, item), age_bucket(day - self.first_day[item])

    def to(self, device: torch.device | str) -> ItemState:
        return ItemState(self.popularity.to(device), self.first_day.to(device))

    @functools.cached_property
    def keys(self) -> torch.Tensor:
        """``[n_days, n_items]``: ``pop_bucket * AGE_BUCKETS + age_bucket`` of each item on each day of the
        range, computed once so that a batch looks each (day, item) pair up in one gather."""
        n_days = self.popularity.buckets.shape[0]
        days = self.popularity.first_day + torch.arange(n_days, device=self.first_day.device)
        age = age_bucket(days[:, None] - self.first_day[None, :])
        return self.popularity.buckets * AGE_BUCKETS + age

    def keys_at(self, day: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """The (popularity, age) key of each ``item`` on its ``day`` (broadcast; days outside the range are
        clamped, as in :meth:`DailyPopularity.at`)."""
        n_days, n_items = self.keys.shape
        row = (day - self.popularity.first_day).clamp(0, n_days - 1)
        return self.keys[row, item.clamp(0, n_items - 1)]

    def as_of(self, d: date) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pop_bucket, age_bucket)`` of every item index at the start of day ``d``: ``[n_items]`` each."""
        items = torch.arange(self.first_day.shape[0], device=self.first_day.device)
        return self.at(torch.full_like(items, day_number(d)), items)


def age_bucket(days: torch.Tensor) -> torch.Tensor:
    """0 for an item not engaged before the day (``days <= 0``), else ``floor(log2(days)) + 1``, capped."""
    known = days > 0
    log = torch.floor(torch.log2(days.clamp_min(1).double())).long() + 1
    return torch.where(known, log.clamp_max(AGE_BUCKETS - 1), torch.zeros_like(days))


def item_state(
    lake_root: str | Path, ds: date, first: date, last: date, popularity_days: int, n_items: int
) -> ItemState:
    """Popularity and first-engagement day of every item, for the days ``first`` .. ``last`` (inclusive).

    Ages count from the first engagement in ``ds``'s interactions (its whole span), so an item's age on a day
    depends only on the events before that day.
    """
    item, us, weight = _engaged(lake_root, ds, last)  # one scan: the ages need the whole span anyway
    popularity = _daily(item, us, weight, first, last, popularity_days, n_items)
    first_day = np.full(n_items, _NEVER, dtype=np.int64)
    keep = item < n_items
    np.minimum.at(first_day, item[keep], us[keep] // _DAY_US)
    return ItemState(popularity, torch.from_numpy(first_day))
