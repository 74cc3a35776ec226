"""`nightrec api` over real published snapshots in a local store: answers, bad input, cold start, hot swap,
rollback and refusal of bad snapshots (the service keeps serving the last good one and /readyz says why)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.io import lake
from nightrec.io.store import LocalStore, open_store
from nightrec.publish import pointer, snapshot
from nightrec.serving.app import SNAPSHOT_HEADER, create_app
from nightrec.serving.follower import Follower
from tests.unit.publish import write_recs
from tests.unit.serving import running

DS = date(2026, 11, 22)


def _publish(store, tmp_path: Path, run_id: str, *, ds: date = DS, shift: int = 0, flip: bool = True) -> str:
    recs = write_recs(tmp_path / f"recs-{run_id}", n_users=12, k=3)
    if shift:  # another night: other items for the same users
        for f in recs.glob("part-*.parquet"):
            t = pq.read_table(f)
            items = [f"i{(int(i[1:]) + shift) % 50}" for i in t["item_id"].to_pylist()]
            pq.write_table(t.set_column(2, "item_id", pa.array(items)), f)
    cold = pa.table(
        {
            "segment": ["", "", "", "young", "young", "young"],
            "rank": [1, 2, 3, 1, 2, 3],
            "item_id": ["p1", "p2", "p3", "y1", "y2", "y3"],
            "score": [30.0, 20.0, 10.0, 3.0, 2.0, 1.0],
        }
    )
    pq.write_table(cold, recs / lake.COLDSTART)
    manifest = snapshot.write_snapshot(recs, store, ds=ds, run_id=run_id, shard_count=3, meta={"top_k": 3})
    key = snapshot.manifest_key(ds, run_id)
    if flip:
        pointer.flip_live(store, manifest, key)
    return key


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="module")
def serve():
    """One uvicorn server for the module; each test points it at its own follower."""
    holder = {}

    async def app(scope, receive, send):
        await holder["app"](scope, receive, send)

    with running(app, lifespan="off") as client:

        def client_for(follower: Follower):
            holder["app"] = create_app(follower, poll=False)
            return client

        yield client_for


def test_a_known_user_gets_their_list_with_the_snapshot_in_body_and_header(store, tmp_path, serve):
    _publish(store, tmp_path, "run-a")
    follower = Follower(store)
    assert follower.poll()
    client = serve(follower)
    r = client.get("/v1/recs/u7")
    assert r.status_code == 200
    body = r.json()
    # write_recs gives user u<n> items i<n+1>, i<n+2>, i<n+3> with scores 1/rank.
    assert [i["item_id"] for i in body["items"]] == ["i8", "i9", "i10"]
    assert [i["rank"] for i in body["items"]] == [1, 2, 3]
    assert body["items"][1]["score"] == pytest.approx(0.5)
    assert body["source"] == "model"
    assert body["snapshot"] == {"ds": "2026-11-22", "generation": 1, "run_id": "run-a"}
    assert r.headers[SNAPSHOT_HEADER] == "ds=2026-11-22;generation=1;run=run-a"
    assert [i["item_id"] for i in client.get("/v1/recs/u7?k=2").json()["items"]] == ["i8", "i9"]
    assert client.get("/v1/recs/u5").json()["source"] == "fallback"  # every 5th user is a cold one


def test_unknown_users_get_the_cold_start_list_of_their_segment_or_the_global_one(store, tmp_path, serve):
    _publish(store, tmp_path, "run-a")
    follower = Follower(store)
    follower.poll()
    client = serve(follower)
    anon = client.get("/v1/recs/never-seen")
    assert anon.status_code == 200 and anon.json()["source"] == "fallback"
    assert [i["item_id"] for i in anon.json()["items"]] == ["p1", "p2", "p3"]
    young = client.get("/v1/recs/never-seen", params={"segment": "young", "k": 2}).json()
    assert [i["item_id"] for i in young["items"]] == ["y1", "y2"]
    other = client.get("/v1/recs/never-seen", params={"segment": "no-such-segment"}).json()
    assert [i["item_id"] for i in other["items"]] == ["p1", "p2", "p3"]
    assert client.get("/v1/recs/a%2Fb%20c").json()["user_id"] == "a/b c"  # any printable id, never a 500


@pytest.mark.parametrize(
    ("path", "field", "words"),
    [
        ("/v1/recs/" + "x" * 257, "user_id", "longer than 256"),
        ("/v1/recs/bad%0Aid", "user_id", "control characters"),
        ("/v1/recs/bad%00id", "user_id", "control characters"),
        ("/v1/recs/u1?k=0", "k", "from 1 to 3"),
        ("/v1/recs/u1?k=4", "k", "from 1 to 3"),
        ("/v1/recs/u1?k=two", "k", "'two'"),
        ("/v1/recs/u1?k=-1", "k", "from 1 to 3"),
        ("/v1/recs/", "user_id", "empty"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(store, tmp_path, path, field, words, serve):
    _publish(store, tmp_path, "run-a")
    follower = Follower(store)
    follower.poll()
    r = serve(follower).get(path)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and words in r.json()["error"]


def test_ready_only_once_a_snapshot_is_loaded_and_metrics_count_what_was_served(store, tmp_path, serve):
    follower = Follower(store)
    client = serve(follower)
    assert client.get("/healthz").status_code == 200
    follower.poll()  # nothing published yet
    r = client.get("/readyz")
    assert r.status_code == 503 and "nothing is live" in r.json()["why"]
    assert client.get("/v1/recs/u1").status_code == 503
    _publish(store, tmp_path, "run-a")
    follower.poll()
    assert client.get("/readyz").json() == {
        "ready": True,
        "snapshot": "ds=2026-11-22;generation=1;run=run-a",
        "key": snapshot.manifest_key(DS, "run-a"),
        "users": 12,
    }
    for user in ("u1", "u2", "u5", "nobody"):
        client.get(f"/v1/recs/{user}")
    text = client.get("/metrics").text
    assert 'nightrec_api_requests_total{route="recs",status="200"} 4.0' in text
    assert 'nightrec_api_requests_total{route="recs",status="503"} 1.0' in text
    assert 'nightrec_api_lists_total{source="fallback"} 2.0' in text  # u5 (cold) and nobody
    assert (
        'nightrec_api_snapshot_info{channel="default",ds="2026-11-22",generation="1",run_id="run-a"} 1.0'
        in text
    )
    assert 'nightrec_api_request_seconds_count{route="recs"} 5.0' in text
    assert 'nightrec_api_snapshot_users{channel="default"} 12.0' in text


def test_new_snapshots_swap_in_and_a_rollback_is_served_from_memory(store, tmp_path, serve):
    first = _publish(store, tmp_path, "run-a")
    follower = Follower(store)
    follower.poll()
    client = serve(follower)
    served_first = follower.current
    second = _publish(store, tmp_path, "run-b", ds=date(2026, 11, 23), shift=5)
    assert follower.poll() and follower.current.key == second and follower.previous is served_first
    assert [i["item_id"] for i in client.get("/v1/recs/u7").json()["items"]] == ["i13", "i14", "i15"]
    pointer.rollback(store, first)
    assert follower.poll()
    assert follower.current is served_first  # the same object: no reload, answered at once
    assert client.get("/v1/recs/u7").headers[SNAPSHOT_HEADER].endswith("run=run-a")
    assert not follower.poll()  # nothing new


def _corrupt_part(store, key: str) -> None:
    part = snapshot.load_manifest(store, key).parts[1].key
    data = bytearray(store.get_bytes(part))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(part, bytes(data))


@pytest.mark.parametrize(
    ("harm", "words"),
    [
        ("corrupt_part", "sha256 does not match"),
        ("missing_part", "missing"),
        ("missing_manifest", "manifest missing"),
        ("corrupt_coldstart", "coldstart.parquet"),
    ],
)
def test_a_bad_snapshot_is_refused_and_the_last_good_one_stays_served(store, tmp_path, harm, words, serve):
    _publish(store, tmp_path, "run-a")
    follower = Follower(store)
    follower.poll()
    client = serve(follower)
    bad = _publish(store, tmp_path, "run-b", ds=date(2026, 11, 23), shift=5, flip=False)
    manifest = snapshot.load_manifest(store, bad)
    if harm == "corrupt_part":
        _corrupt_part(store, bad)
    elif harm == "missing_part":
        store.delete([manifest.parts[2].key])
    elif harm == "corrupt_coldstart":
        store.put_bytes(manifest.coldstart.key, b"PAR1 not really")
    # The pointer is moved by hand, past the publish protocol's own checks, as a broken tool or a
    # hand edit would.
    live = pointer.read_live(store)[0]
    moved = live.model_copy(update={"manifest_key": bad, "ds": manifest.ds, "run_id": "run-b"})
    store.put_bytes(pointer.POINTER_KEY, moved.to_json())
    if harm == "missing_manifest":
        store.delete([bad])
    assert not follower.poll()
    assert follower.current.manifest.run_id == "run-a"
    r = client.get("/v1/recs/u7")
    assert r.status_code == 200 and r.headers[SNAPSHOT_HEADER].endswith("run=run-a")
    ready = client.get("/readyz").json()
    assert ready["ready"] and words in ready["problem"], ready
    assert not follower.poll() and bad in follower.refused  # not fetched again every poll


def test_an_unreachable_store_at_start_up_keeps_the_service_unready_with_the_reason(monkeypatch, serve):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    follower = Follower(open_store("s3://nowhere/recs", max_attempts=1))
    follower.poll()
    r = serve(follower).get("/readyz")
    assert r.status_code == 503 and "live pointer unreadable" in r.json()["why"]
    assert serve(follower).get("/v1/recs/u1").status_code == 503


def test_a_store_lost_mid_way_leaves_the_snapshot_in_memory_served(store, tmp_path, serve):
    _publish(store, tmp_path, "run-a")
    follower = Follower(store)
    follower.poll()
    client = serve(follower)
    store.root.rename(tmp_path / "store-gone")  # the volume went away
    follower.poll()
    assert client.get("/v1/recs/u7").status_code == 200
    ready = client.get("/readyz").json()
    assert ready["ready"] and "pointer" in ready["problem"]
