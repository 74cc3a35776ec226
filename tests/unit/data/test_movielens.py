"""MovieLens import: tiny hand-written folders in each real layout, read back against the contract."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nightrec.data import movielens
from schemas.arrow import to_arrow_schema
from schemas.tables import RAW_TABLES

IMDB = "http://us.imdb.com/M/title-exact?"
TS = (881250949, 978300760, 964982703)  # unix seconds, as in the real files


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in movielens.GENRES_100K)


def _write(path: Path, lines: list[str], encoding: str = "latin-1") -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))


@pytest.fixture
def ml_100k(tmp_path) -> Path:
    src = tmp_path / "ml-100k"
    src.mkdir()
    _write(src / "u.data", [f"1\t10\t4\t{TS[0]}", f"2\t20\t2\t{TS[1]}", f"2\t10\t5\t{TS[2]}"])
    _write(
        src / "u.item",
        [
            f"10|Misérables, Les (1995)|01-Jan-1995||{IMDB}Mis%E9rables|{_flags('Drama', 'Musical')}",
            f"20|Heat|15-Dec-1995||{IMDB}Heat|{_flags('Action', 'Crime', 'Thriller')}",
            f"30|unknown||||{_flags()}",
        ],
    )
    _write(src / "u.user", ["1|24|M|technician|85711", "2|53|F|other|94043"])
    return src


@pytest.fixture
def ml_1m(tmp_path) -> Path:
    src = tmp_path / "ml-1m"
    src.mkdir()
    _write(src / "ratings.dat", [f"1::10::5::{TS[0]}", f"2::20::3::{TS[1]}"])
    _write(
        src / "movies.dat",
        [
            "10::Misérables, Les (1995)::Drama|Musical",
            "20::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi",
        ],
    )
    _write(src / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072"])
    return src


@pytest.fixture
def ml_latest(tmp_path) -> Path:
    src = tmp_path / "ml-latest-small"
    src.mkdir()
    _write(
        src / "ratings.csv",
        ["userId,movieId,rating,timestamp", f"7,10,4.5,{TS[2]}", f"9,20,0.5,{TS[0]}"],
        "utf-8",
    )
    _write(
        src / "movies.csv",
        [
            "movieId,title,genres",
            '10,"Misérables, Les (1995)",Drama|Musical',
            "20,Jumanji (1995) ,(no genres listed)",
        ],
        "utf-8",
    )
    return src


def _read(out: Path, name: str) -> list[dict]:
    tbl = pq.read_table(out / name)
    assert tbl.schema.equals(to_arrow_schema(RAW_TABLES[name])), name
    return tbl.to_pylist()


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def test_ml_100k(ml_100k, tmp_path):
    summary = movielens.import_movielens(ml_100k, tmp_path / "out")
    assert (summary.layout, summary.n_events, summary.n_items, summary.n_users) == ("ml-100k", 3, 3, 2)
    assert (summary.first_ts, summary.last_ts) == (_utc(TS[0]), _utc(TS[1]))
    events = _read(tmp_path / "out", "events")
    assert [(e["user_id"], e["item_id"], e["value"], e["ts"]) for e in events] == [
        ("1", "10", 4.0, _utc(TS[0])),
        ("2", "20", 2.0, _utc(TS[1])),
        ("2", "10", 5.0, _utc(TS[2])),
    ]
    assert {e["event_type"] for e in events} == {"rating"} and all(e["session_id"] is None for e in events)
    items = {i["item_id"]: i for i in _read(tmp_path / "out", "items")}
    assert items["10"]["category"] == "Drama" and items["10"]["tags"] == ["Drama", "Musical"]
    assert dict(items["10"]["attributes"]) == {"title": "Misérables, Les", "year": "1995"}
    assert dict(items["20"]["attributes"]) == {"title": "Heat", "year": "1995"}  # year from the release date
    assert items["20"]["tags"] == ["Action", "Crime", "Thriller"]
    assert (items["30"]["category"], items["30"]["tags"]) == ("unknown", [])
    assert all(i["available"] and i["price"] is None and i["created_at"] is None for i in items.values())
    users = {u["user_id"]: dict(u["attributes"]) for u in _read(tmp_path / "out", "users")}
    assert users["1"] == {"gender": "M", "age": "18-24", "occupation": "technician", "segment": "M:18-24"}
    assert users["2"]["segment"] == "F:50-55"


def test_ml_1m(ml_1m, tmp_path):
    summary = movielens.import_movielens(ml_1m, tmp_path / "out")
    assert (summary.layout, summary.n_events, summary.n_items, summary.n_users) == ("ml-1m", 2, 2, 2)
    events = _read(tmp_path / "out", "events")
    assert [(e["user_id"], e["item_id"], e["value"], e["ts"]) for e in events] == [
        ("1", "10", 5.0, _utc(TS[0])),
        ("2", "20", 3.0, _utc(TS[1])),
    ]
    items = {i["item_id"]: i for i in _read(tmp_path / "out", "items")}
    star_wars = items["20"]
    assert dict(star_wars["attributes"]) == {"title": "Star Wars: Episode IV - A New Hope", "year": "1977"}
    assert (star_wars["category"], star_wars["tags"]) == (
        "Action",
        ["Action", "Adventure", "Fantasy", "Sci-Fi"],
    )
    assert dict(items["10"]["attributes"])["title"] == "Misérables, Les"
    users = {u["user_id"]: dict(u["attributes"]) for u in _read(tmp_path / "out", "users")}
    assert users["1"] == {
        "gender": "F",
        "age": "under-18",
        "occupation": "K-12 student",
        "segment": "F:under-18",
    }
    assert users["2"] == {"gender": "M", "age": "56+", "occupation": "self-employed", "segment": "M:56+"}


def test_ml_1m_layout_without_users_file_derives_users(ml_1m, tmp_path):
    (ml_1m / "users.dat").unlink()  # the ml-10m shape
    movielens.import_movielens(ml_1m, tmp_path / "out")
    users = _read(tmp_path / "out", "users")
    assert [(u["user_id"], u["attributes"], u["signup_at"]) for u in users] == [
        ("1", [], None),
        ("2", [], None),
    ]


def test_ml_latest(ml_latest, tmp_path):
    summary = movielens.import_movielens(ml_latest, tmp_path / "out")
    assert (summary.layout, summary.n_events, summary.n_items, summary.n_users) == ("ml-latest", 2, 2, 2)
    events = _read(tmp_path / "out", "events")
    assert [(e["user_id"], e["item_id"], e["value"], e["ts"]) for e in events] == [
        ("7", "10", 4.5, _utc(TS[2])),
        ("9", "20", 0.5, _utc(TS[0])),
    ]
    items = {i["item_id"]: i for i in _read(tmp_path / "out", "items")}
    assert dict(items["10"]["attributes"]) == {"title": "Misérables, Les", "year": "1995"}
    assert (items["20"]["category"], items["20"]["tags"]) == ("unknown", [])
    assert dict(items["20"]["attributes"]) == {"title": "Jumanji", "year": "1995"}
    users = _read(tmp_path / "out", "users")
    assert [(u["user_id"], u["attributes"]) for u in users] == [("7", []), ("9", [])]


def test_reimport_replaces_previous_parts(ml_latest, ml_1m, tmp_path):
    out = tmp_path / "out"
    movielens.import_movielens(ml_1m, out)
    movielens.import_movielens(ml_latest, out)
    assert {e["user_id"] for e in _read(out, "events")} == {"7", "9"}


@pytest.mark.parametrize("files", [[], ["u.data", "u.item"], ["ratings.csv"], ["ratings.dat", "movies.csv"]])
def test_unknown_layout_names_the_folder_and_the_files(tmp_path, files):
    for f in files:
        (tmp_path / f).write_text("1\n")
    with pytest.raises(ValueError) as err:
        movielens.import_movielens(tmp_path, tmp_path / "out")
    for expected in (
        str(tmp_path),
        "u.data",
        "u.user",
        "ratings.dat",
        "movies.dat",
        "ratings.csv",
        "movies.csv",
    ):
        assert expected in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Toy Story (1995)", ("Toy Story", "1995")),
        ("Jumanji (1995) ", ("Jumanji", "1995")),
        ("Heat", ("Heat", None)),
    ],
)
def test_split_title(title, expected):
    assert movielens.split_title(title) == expected


@pytest.mark.parametrize(
    ("age", "bucket"), [(7, "under-18"), (18, "18-24"), (34, "25-34"), (49, "45-49"), (80, "56+")]
)
def test_age_bucket(age, bucket):
    assert movielens.age_bucket(age) == bucket
