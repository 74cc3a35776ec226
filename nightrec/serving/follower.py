"""Follow the live pointer: load each newly live snapshot in the background, swap it in with one assignment.

The serving thread only ever reads ``follower.current`` (one reference): it sees the old snapshot or the new
one, never half of either. The previous snapshot stays in memory, so a rollback (the pointer flipped back to
it) is served at once. A snapshot that fails verification is refused: the service keeps what it has and says
why in ``/readyz``; a store that cannot be reached is retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nightrec.errors import NightrecError
from nightrec.io.store import ObjectStore, StoreError
from nightrec.publish import pointer
from nightrec.serving.lists import ServedSnapshot, SnapshotRefused, load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """The last thing that went wrong following the pointer (None once a later poll succeeds)."""

    what: str
    key: str | None
    at: float  # time.time()


class Follower:
    """Holds the served snapshot and the one before it; ``poll()`` once, or ``start()`` a polling thread.

    Args:
        store: The object store the snapshots are published to.
        poll_s: Seconds between reads of the live pointer.
        on_swap: Called with (new, old) after each swap (metrics, logs).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        poll_s: float = 5.0,
        on_swap: Callable[[ServedSnapshot, ServedSnapshot | None], None] | None = None,
    ):
        self.store, self.poll_s, self.on_swap = store, poll_s, on_swap
        self.current: ServedSnapshot | None = None
        self.previous: ServedSnapshot | None = None
        self.problem: Problem | None = None
        self.refused: set[str] = set()  # manifest keys that failed verification: not retried every poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Read the pointer once; load and swap in what it names if that is new. True when it swapped."""
        try:
            live = pointer.read_live(self.store)
        except (StoreError, NightrecError, ValueError) as e:
            self._trouble(f"live pointer unreadable: {e}", None)
            return False
        if live is None:
            self._trouble(
                "nothing is live yet (no recs/_live.json in the store)"
                if self.current is None
                else "the live pointer is gone from the store",
                None,
            )
            return False
        key = live[0].manifest_key
        if self.current is not None and self.current.key == key:
            self.problem = None
            return False
        if key in self.refused:
            return False
        if self.previous is not None and self.previous.key == key:
            new = self.previous  # a rollback: already verified, already in memory
        else:
            try:
                new = load(self.store, key)
            except SnapshotRefused as e:
                self.refused.add(key)
                self._trouble(f"snapshot refused: {e}", key)
                return False
            except (StoreError, NightrecError) as e:
                self._trouble(f"snapshot unreadable (retried at the next poll): {e}", key)
                return False
        old, self.previous, self.current = self.current, self.current, new
        self.problem = None
        log.info(
            "serving %s (%d users, loaded in %.1f s)%s",
            key,
            new.users,
            new.load_seconds,
            f", previous {old.key}" if old else "",
        )
        if self.on_swap:
            self.on_swap(new, old)
        return True

    def _trouble(self, what: str, key: str | None) -> None:
        if self.problem is None or self.problem.what != what:
            log.warning("%s%s", what, f"; still serving {self.current.key}" if self.current else "")
        self.problem = Problem(what, key, time.time())

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="snapshot-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # the follower must outlive any one bad poll
                log.exception("snapshot follower: unexpected error")
                self._trouble(f"unexpected error: {e!r}", None)
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
