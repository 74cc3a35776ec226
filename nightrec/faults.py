"""Failpoints: named places on real code paths where a test can make the process fail (RELIABILITY.md).

``NIGHTREC_FAULT=<point>[:<arg>...]`` with arguments in any order: an action (``kill`` = SIGKILL this process,
the default; ``exit`` = raise SystemExit; ``raise`` = raise InjectedFault; ``hang`` = stop here until killed
from outside, as on a lost machine, after writing this pid to the file ``$NIGHTREC_FAULT_MARK`` names, if set),
a number (fire only at that count, e.g. the epoch) and a name (fire only for that target, e.g. the table).
Examples:
``train.after_epoch:1:kill``, ``checkpoint.mid_write:exit``, ``features.during_write:raise:user_features``.

The variable is read at the call, not through Settings, so a subprocess that is killed sees it without plumbing,
and a test can change it per case. Unset, every failpoint is a no-op.
"""

from __future__ import annotations

import os
import signal
import time

from nightrec.errors import NightrecError

FAULT_ENV = "NIGHTREC_FAULT"
_ACTIONS = ("kill", "exit", "raise", "hang")
MARK_ENV = "NIGHTREC_FAULT_MARK"


class InjectedFault(NightrecError):
    """Raised at a failpoint whose action is ``raise``."""


def fault(point: str, *, count: int | None = None, target: str | None = None) -> None:
    """Fail here if ``$NIGHTREC_FAULT`` names this point (and matches its count or target, when given)."""
    spec = os.environ.get(FAULT_ENV, "")
    name, _, rest = spec.partition(":")
    if not spec or name != point:
        return
    args = [a for a in rest.split(":") if a]
    action = next((a for a in args if a in _ACTIONS), "kill")
    filters = [a for a in args if a not in _ACTIONS]
    for f in filters:
        if f.isdigit() and count is not None and int(f) != count:
            return
        if not f.isdigit() and target is not None and f != target:
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        if mark := os.environ.get(MARK_ENV):
            with open(mark, "w") as f:
                f.write(str(os.getpid()))
        while True:
            time.sleep(1)
    message = f"fault injected at {spec}"
    if action == "exit":
        raise SystemExit(message)
    raise InjectedFault(message)
