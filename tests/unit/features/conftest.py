"""One clean feature build of the tiny data set, shared by the leakage, idempotence and reference tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from nightrec.features import build
from nightrec.features.events import Cutoffs
from nightrec.settings import FeatureSettings
from schemas.results import FeaturesBuilt

# Two days before the end of the tiny data, so there are real events on and after the run date to edit.
RUN_DATE = date(2026, 11, 20)
# Drawn negatives on (they are off by default) so their rules stay tested with every other feature rule.
CFG = FeatureSettings(holdout_days=5, valid_days=5, negatives_per_positive=2)


@dataclass(frozen=True)
class CleanBuild:
    lake: str
    summary: FeaturesBuilt
    cut: Cutoffs


@pytest.fixture(scope="session")
def clean_build(spark, tiny_raw, tmp_path_factory) -> CleanBuild:
    lake_root = str(tmp_path_factory.mktemp("clean") / "lake")
    summary = build.build_features(spark, tiny_raw, lake_root, RUN_DATE, CFG)
    return CleanBuild(lake_root, summary, Cutoffs.of_night(lake_root, RUN_DATE, CFG))


def lake_copy(src: str, dst: Path) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)
