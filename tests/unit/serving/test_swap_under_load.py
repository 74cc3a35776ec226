"""Three flips and a rollback while clients keep asking: no request fails, and every answer names the
snapshot the service held at some moment of that request (never a mix, never one it had not swapped in)."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

from nightrec.io.store import LocalStore
from nightrec.publish import pointer
from nightrec.serving.app import SNAPSHOT_HEADER, create_app
from nightrec.serving.follower import Follower
from tests.unit.serving import running
from tests.unit.serving.test_api import DS, _publish


def test_flips_and_a_rollback_under_load_drop_no_request(tmp_path):
    store = LocalStore(tmp_path / "store")
    first = _publish(store, tmp_path, "run-0")
    swaps: list[tuple[float, str]] = []  # (when, tag) of each swap, in order
    follower = Follower(
        store, poll_s=0.02, on_swap=lambda new, old: swaps.append((time.monotonic(), new.tag))
    )
    follower.poll()
    answers: list[tuple[float, float, int, str, dict]] = []
    stop = threading.Event()

    with running(create_app(follower, poll=True)) as client:

        def ask(worker: int) -> None:
            n = 0
            while not stop.is_set():
                t0 = time.monotonic()
                r = client.get(f"/v1/recs/u{(worker * 7 + n) % 12}")
                answers.append(
                    (t0, time.monotonic(), r.status_code, r.headers.get(SNAPSHOT_HEADER, ""), r.json())
                )
                n += 1

        threads = [threading.Thread(target=ask, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for night in range(1, 4):
            time.sleep(0.4)
            _publish(store, tmp_path, f"run-{night}", ds=DS + timedelta(days=night), shift=night)
        time.sleep(0.4)
        pointer.rollback(store, first)
        time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join()

    tags = [tag for _, tag in swaps]
    assert tags == [
        f"ds={(DS + timedelta(days=n)).isoformat()};generation=1;run=run-{n}" for n in (0, 1, 2, 3, 0)
    ]
    assert len(answers) > 100 and {status for *_, status, _, _ in answers} == {200}
    held = [
        (at, swaps[i + 1][0] if i + 1 < len(swaps) else float("inf"), tag)
        for i, (at, tag) in enumerate(swaps)
    ]
    for t0, t1, _, tag, body in answers:
        assert any(tag == h_tag and h_from <= t1 and h_to >= t0 for h_from, h_to, h_tag in held), (
            t0,
            t1,
            tag,
        )
        # The body comes from the snapshot the header names: user u<n> of night s has items i<n+1+s>, ...
        night, user = int(tag.rsplit("run-", 1)[1]), int(body["user_id"][1:])
        assert [i["item_id"] for i in body["items"]] == [f"i{(user + r + night) % 50}" for r in (1, 2, 3)]
    assert date.fromisoformat(tags[-1].split(";")[0][3:]) == DS
