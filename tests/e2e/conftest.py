"""Data shared by the end-to-end tests (read only: each test runs its nights in a home of its own)."""

from __future__ import annotations

import pytest

from nightrec.data import synthetic


@pytest.fixture(scope="session")
def e2e_raw(tmp_path_factory):
    # Big enough that two short trainings beat popularity reliably, small enough for ~1 min a night.
    out = tmp_path_factory.mktemp("e2e") / "raw"
    synthetic.generate(600, 200, 40, out, seed=11, events_per_user=50.0)
    return out
