"""Which night a run is for, when its caller did not say.

The first stages of a night (the raw gate, the feature build) read it off the raw events: the day after the
newest event. Every later stage reads it off the lake: the newest night whose feature tables are all complete.
So only the Spark stages ever start a JVM to choose a date, and in the modular chain the first stage records
the date it chose on its flow run, which the next stage's trigger passes on.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from nightrec.errors import StageInputMissing
from nightrec.features.build import OUTPUTS
from nightrec.io import lake, raw


def from_events(spark: SparkSession, data: str | Path) -> date:
    """The day after the newest event of ``data`` that is not in the future.

    Events stamped later than now cannot set the date: a clock-skewed feed would otherwise move the night into
    the future and hide its bad rows from the raw gate's timestamp rule.

    Raises:
        ContractViolation: the events table cannot be read (the raw gate reports it, with its Data Docs).
        ValueError: there are no events to date the night by.
    """
    events = raw.read_raw_table(spark, data, "events")
    not_future = F.when(F.col("ts") <= F.current_timestamp(), F.col("ts"))
    newest = events.agg(F.max(not_future)).first()[0]
    if newest is None:
        raise ValueError(f"no events in {data}/events: cannot choose a run date; pass one")
    return newest.date() + timedelta(days=1)


def from_lake(lake_root: str | Path) -> date:
    """The newest run date whose feature tables are all complete (read from the markers; no Spark).

    Raises:
        StageInputMissing: no night has complete features yet.
    """
    first = Path(lake_root) / OUTPUTS[0].name
    dates = sorted((_ds(p) for p in first.glob("ds=*") if _ds(p)), reverse=True) if first.exists() else []
    for ds in dates:
        if all(lake.is_complete(lake_root, t.name, ds) for t in OUTPUTS):
            return ds
    raise StageInputMissing(
        f"no night has complete feature tables in {lake_root}: run build-features first, or pass run_date"
    )


def _ds(path: Path) -> date | None:
    try:
        return date.fromisoformat(path.name.removeprefix("ds="))
    except ValueError:
        return None
