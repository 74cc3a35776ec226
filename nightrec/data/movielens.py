"""Import a MovieLens folder (ml-100k, ml-1m or ml-10m, ml-latest, -small or ml-25m) into the raw contract.

Ratings become ``rating`` events (value = the rating), movies become items (category = first genre, tags = all
genres, attributes title and year) and users keep their demographics where the layout has them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from nightrec.data import raw_files
from schemas.arrow import arrow_type
from schemas.tables import EVENTS, ITEMS, USERS

# Files each layout must have, in detection order; ml-1m's users.dat is optional (ml-10m has none).
LAYOUTS = {
    "ml-100k": ("u.data", "u.item", "u.user"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
AGES_1M = {1: "under-18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
_NO_GENRE = "unknown"
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_movielens`` wrote."""

    layout: str
    src: Path
    out: Path
    n_events: int
    n_items: int
    n_users: int
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None

    def __str__(self) -> str:
        span = (
            f" from {self.first_ts:%Y-%m-%d} to {self.last_ts:%Y-%m-%d}"
            if self.first_ts and self.last_ts
            else ""
        )
        return (
            f"imported {self.layout} from {self.src}: {self.n_events} ratings{span}, {self.n_users} users, "
            f"{self.n_items} items, to {self.out}. Run it: nightrec run --data {self.out}"
        )


def detect_layout(src: Path) -> str:
    """The MovieLens layout of folder ``src``: ``ml-100k``, ``ml-1m`` or ``ml-latest``.

    Raises:
        ValueError: no layout's files are all present; the message names the folder and the files looked for.
    """
    src = Path(src)
    for layout, files in LAYOUTS.items():
        if all((src / f).is_file() for f in files):
            return layout
    looked = "; ".join(f"{name}: {', '.join(files)}" for name, files in LAYOUTS.items())
    raise ValueError(f"{src} is not a MovieLens folder: looked for {looked}")


def import_movielens(src: Path, out: Path) -> ImportSummary:
    """Convert a MovieLens folder into ``out/events/``, ``out/items/`` and ``out/users/`` (Parquet).

    Args:
        src: The unpacked MovieLens folder (the one holding ``u.data``, ``ratings.dat`` or ``ratings.csv``).
        out: Raw data root to write.

    Returns:
        The layout found, row counts and the time range of the ratings.

    Raises:
        ValueError: ``src`` matches no known layout.
    """
    src, out = Path(src), Path(out)
    layout = detect_layout(src)
    ratings, movies, users = _READERS[layout](src)
    if users is None:
        users = pd.DataFrame({"user_id": pd.unique(ratings["user_id"])})
    raw_files.write_table(events_table(ratings), out, EVENTS)
    raw_files.write_table(items_table(movies), out, ITEMS)
    raw_files.write_table(users_table(users), out, USERS)
    ts = ratings["ts"]
    return ImportSummary(
        layout=layout,
        src=src,
        out=out,
        n_events=len(ratings),
        n_items=len(movies),
        n_users=len(users),
        first_ts=_utc(ts.min()) if len(ts) else None,
        last_ts=_utc(ts.max()) if len(ts) else None,
    )


def events_table(ratings: pd.DataFrame) -> pa.Table:
    """Ratings (user_id, item_id, rating, ts in unix seconds) as ``rating`` events."""
    n = len(ratings)
    return pa.table(
        {
            "user_id": pa.array(ratings["user_id"].astype(str).to_numpy()),
            "item_id": pa.array(ratings["item_id"].astype(str).to_numpy()),
            "event_type": pa.array(np.full(n, "rating")),
            "ts": raw_files.timestamps(ratings["ts"].to_numpy(np.int64) * 1_000_000),
            "value": pa.array(ratings["rating"].to_numpy(np.float64)),
            "session_id": pa.nulls(n, pa.string()),
        }
    )


def items_table(movies: pd.DataFrame) -> pa.Table:
    """Movies (item_id, title with '(year)', genres as lists) as catalog items."""
    titles = [split_title(t) for t in movies["title"].fillna("").astype(str)]
    genres = [list(g) for g in movies["genres"]]
    attrs = [[("title", t)] + ([("year", y)] if y else []) for t, y in titles]
    n = len(movies)
    return pa.table(
        {
            "item_id": pa.array(movies["item_id"].astype(str).to_numpy()),
            "category": pa.array([g[0] if g else _NO_GENRE for g in genres]),
            "tags": pa.array(genres, type=arrow_type("array<string>")),
            "price": pa.nulls(n, pa.float64()),
            "available": pa.array(np.ones(n, bool)),
            "created_at": pa.nulls(n, arrow_type("timestamp")),
            "attributes": pa.array(attrs, type=arrow_type("map<string,string>")),
        }
    )


def users_table(users: pd.DataFrame) -> pa.Table:
    """Users (user_id, optional gender, age_bucket, occupation) with those as attributes plus a segment."""
    cols = [c for c in ("gender", "age_bucket", "occupation") if c in users.columns]
    records = users[cols].to_dict("records") if cols else [{} for _ in range(len(users))]
    attrs = [_user_attributes(r) for r in records]
    return pa.table(
        {
            "user_id": pa.array(users["user_id"].astype(str).to_numpy()),
            "signup_at": pa.nulls(len(users), arrow_type("timestamp")),
            "attributes": pa.array(attrs, type=arrow_type("map<string,string>")),
        }
    )


def split_title(title: str) -> tuple[str, str | None]:
    """``'Toy Story (1995)'`` -> ``('Toy Story', '1995')``; a title without a year keeps it as None."""
    m = _TITLE_YEAR.match(title)
    return (m["title"], m["year"]) if m else (title.strip(), None)


def age_bucket(age: int) -> str:
    """The ml-1m age bucket of an age in years, so both layouts share one segment vocabulary."""
    lower = max((k for k in AGES_1M if k <= age), default=1)
    return AGES_1M[lower]


def _user_attributes(rec: dict) -> list[tuple[str, str]]:
    attrs = {"gender": rec.get("gender"), "age": rec.get("age_bucket"), "occupation": rec.get("occupation")}
    attrs = {k: str(v) for k, v in attrs.items() if v is not None and not pd.isna(v)}
    if "age" in attrs:
        attrs["segment"] = f"{attrs['gender']}:{attrs['age']}" if "gender" in attrs else attrs["age"]
    return sorted(attrs.items())


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(seconds), tz=dt.UTC)


def _read_100k(src: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(
        src / "u.data",
        sep="\t",
        header=None,
        names=["user_id", "item_id", "rating", "ts"],
        dtype={0: str, 1: str},
    )
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *GENRES_100K]
    movies = pd.read_csv(
        src / "u.item", sep="|", header=None, names=item_cols, encoding="latin-1", dtype={0: str}
    )
    flags = movies[list(GENRES_100K)].fillna(0).to_numpy(bool)
    movies["genres"] = [[g for g, on in zip(GENRES_100K, row, strict=True) if on] for row in flags]
    # 100k titles carry the year; the release date is the fallback for the few that do not.
    year = movies["release_date"].fillna("").astype(str).str[-4:]
    no_year = ~movies["title"].str.match(_TITLE_YEAR) & year.str.fullmatch(r"\d{4}")
    movies.loc[no_year, "title"] = movies.loc[no_year, "title"] + " (" + year[no_year] + ")"
    users = pd.read_csv(
        src / "u.user",
        sep="|",
        header=None,
        names=["user_id", "age", "gender", "occupation", "zip"],
        encoding="latin-1",
        dtype={0: str},
    )
    users["age_bucket"] = users["age"].map(age_bucket)
    return ratings, movies[["item_id", "title", "genres"]], users


def _read_1m(src: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    # Ratings are all digits, so '::' can be read as ':' with empty columns between: the fast C parser
    # instead of the python engine, which matters at 1M-10M rows.
    ratings = pd.read_csv(
        src / "ratings.dat",
        sep=":",
        header=None,
        usecols=[0, 2, 4, 6],
        names=["user_id", "_1", "item_id", "_3", "rating", "_5", "ts"],
        dtype={"user_id": str, "item_id": str},
    )[["user_id", "item_id", "rating", "ts"]]
    movies = _read_dat(src / "movies.dat", ["item_id", "title", "genres"])
    movies["genres"] = movies["genres"].map(_split_genres)
    users = None
    if (src / "users.dat").is_file():
        users = _read_dat(src / "users.dat", ["user_id", "gender", "age", "occupation", "zip"])
        users["age_bucket"] = users["age"].astype(int).map(AGES_1M)
        occ = users["occupation"].astype(int)
        users["occupation"] = occ.map(lambda i: OCCUPATIONS_1M[i] if 0 <= i < len(OCCUPATIONS_1M) else str(i))
    return ratings, movies, users


def _read_latest(src: Path) -> tuple[pd.DataFrame, pd.DataFrame, None]:
    ratings = pd.read_csv(src / "ratings.csv", dtype={"userId": str, "movieId": str}).rename(
        columns={"userId": "user_id", "movieId": "item_id", "timestamp": "ts"}
    )[["user_id", "item_id", "rating", "ts"]]
    movies = pd.read_csv(src / "movies.csv", dtype={"movieId": str}).rename(columns={"movieId": "item_id"})
    movies["genres"] = movies["genres"].map(_split_genres)
    return ratings, movies[["item_id", "title", "genres"]], None


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    # Titles may hold ':' so the two-character separator needs the python engine; these files are small.
    return pd.read_csv(
        path, sep="::", engine="python", header=None, names=names, encoding="latin-1", dtype=str
    )


def _split_genres(genres: str) -> list[str]:
    if not isinstance(genres, str) or genres in ("", "(no genres listed)"):
        return []
    return genres.split("|")


_READERS = {"ml-100k": _read_100k, "ml-1m": _read_1m, "ml-latest": _read_latest}
