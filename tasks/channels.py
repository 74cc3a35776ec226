"""The extra channels of a night (``publish.channels``): each stage runs its channel tasks one after another.

A channel is an A/B variant's line of lists. Its failure is its own: the task run fails (red in the UI, one
warning in the log), the channel's live lists stay as they were, and the night goes on with the default
channel, whose lists users without an experiment are served.
"""

from __future__ import annotations

from typing import TypeVar

from prefect import get_run_logger

from nightrec.io import lake
from nightrec.settings import for_channel
from schemas.params import NightlyParams
from tasks.context import settings_for

T = TypeVar("T")


def run_each(
    task, params: NightlyParams, stage: str, *, needs_lists: bool = True
) -> tuple[dict[str, T], dict[str, str]]:
    """Run ``task(params, channel)`` for every channel. Returns (results by channel, reasons by channel).

    With ``needs_lists``, a channel with no lists for the run date (its precompute failed, which said so
    already) is passed over with a quiet line rather than failing a second and third time.
    """
    done: dict[str, T] = {}
    failed: dict[str, str] = {}
    settings = settings_for(params)
    for channel in sorted(settings.publish.channels):
        table = for_channel(settings, channel).recs_table
        if needs_lists and not lake.is_complete(settings.lake, table, params.run_date):
            failed[channel] = f"no lists for {params.run_date} (its precompute failed or did not run)"
            get_run_logger().info("channel %s: %s skipped, %s", channel, stage, failed[channel])
            continue
        state = task(params, channel, return_state=True)
        if state.is_completed():
            done[channel] = state.result()
            continue
        error = state.result(raise_on_failure=False)
        failed[channel] = one_line(error)
        get_run_logger().warning(
            "channel %s: %s failed, its live lists stay as they were: %s", channel, stage, failed[channel]
        )
    return done, failed


def one_line(error: BaseException | object) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
