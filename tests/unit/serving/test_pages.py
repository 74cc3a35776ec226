"""`nightrec pages`: the Data Docs and night reports over HTTP, and nothing else of the home."""

from __future__ import annotations

from datetime import date

from nightrec.io import lake
from nightrec.ops import links
from nightrec.serving.pages import create_pages
from nightrec.settings import Settings, for_channel
from tests.unit.serving import running

DS = date(2026, 11, 22)


def _home(tmp_path) -> Settings:
    s = Settings(home=tmp_path, publish={"channels": {"ranker": "challenger"}})
    docs = tmp_path / "data_docs" / f"ds={DS}"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>gates of the night</html>")
    (tmp_path / "data_docs" / "index.html").write_text("<html>every night</html>")
    for settings, body in ((s, "default lists"), (for_channel(s, "ranker"), "ranker lists")):
        part = lake.partition_path(settings.lake, settings.recs_table, DS)
        part.mkdir(parents=True)
        (part / lake.NIGHT_REPORT).write_text(f"<html>{body}</html>")
    (tmp_path / "mlflow.db").write_text("secret")
    return s


def test_the_links_a_night_leaves_open_and_the_rest_of_the_home_does_not(tmp_path):
    s = _home(tmp_path)
    base = s.ui.pages_url
    with running(create_pages(s), lifespan="off") as client:
        for url, text in (
            (links.data_docs(s, f"{s.data_docs}/ds={DS}/index.html"), "gates of the night"),
            (links.night_report(s, DS), "default lists"),
            (links.night_report(s, DS, "ranker"), "ranker lists"),
            (f"{base}/", DS.isoformat()),
            (f"{base}/data-docs", "every night"),
        ):
            r = client.get(url.removeprefix(base), follow_redirects=True)
            assert r.status_code == 200 and text in r.text, (url, r.status_code)
        assert client.get("/reports/2026-11-23").status_code == 404
        assert client.get("/reports/22-11-2026").status_code == 400
        assert client.get("/reports/2026-11-22?channel=../x").status_code == 400
        assert client.get("/data-docs/../mlflow.db").status_code == 404
        assert client.get("/data-docs/%2e%2e/mlflow.db").status_code == 404
        assert client.get("/mlflow.db").status_code == 404
