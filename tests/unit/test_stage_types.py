"""What crosses a layer is typed: every flow and task, and every stage entry point the tasks call, takes and
returns declared types (``schemas.params``, ``schemas.results``), never a bare dict."""

from __future__ import annotations

import importlib
import pkgutil
import types
import typing
from datetime import date

import pytest
from prefect import Flow
from prefect.states import State
from prefect.tasks import Task

import flows
import tasks
from nightrec.evaluation import promotion
from nightrec.features import build
from nightrec.publish import stage as publish_stage
from nightrec.scoring import stage as scoring_stage
from nightrec.training import reuse, stages
from nightrec.validation import gates

ALLOWED_MODULES = ("schemas.params", "schemas.results", "schemas.tables")
# A chain stage may end with a Prefect state instead of its result: `Duplicate` (flows/chain.py).
ALLOWED_TYPES = {date, str, int, float, bool, type(None), State}


def _prefect_objects():
    for pkg in (flows, tasks):
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for name, obj in vars(mod).items():
                if isinstance(obj, Flow | Task) and obj.fn.__module__ == mod.__name__:
                    yield f"{mod.__name__}.{name}", obj.fn


ENTRY_POINTS = {
    "features.build.build_features": build.build_features,
    "training.stages.train_retrieval": stages.train_retrieval,
    "training.stages.train_ranking": stages.train_ranking,
    "training.reuse.train_or_reuse": reuse.train_or_reuse,
    "evaluation.promotion.evaluate_and_promote": promotion.evaluate_and_promote,
    "scoring.stage.precompute_with_champions": scoring_stage.precompute_with_champions,
    "publish.stage.publish_recs": publish_stage.publish_recs,
}


def _untyped(hint) -> list[str]:
    """The parts of an annotation that are not declared types (a bare dict, Any, a missing annotation)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [bad for arg in typing.get_args(hint) if arg is not Ellipsis for bad in _untyped(arg)]
    if hint in ALLOWED_TYPES or getattr(hint, "__module__", "") in ALLOWED_MODULES:
        return []
    return [repr(hint)]


def _boundary_hints(fn, params: bool) -> dict:
    hints = typing.get_type_hints(fn)
    assert "return" in hints, f"{fn.__qualname__} declares no return type"
    return hints if params else {"return": hints["return"]}


@pytest.mark.parametrize("name,fn", list(_prefect_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_flows_and_tasks_take_and_return_declared_types(name, fn):
    bad = {k: _untyped(h) for k, h in _boundary_hints(fn, params=True).items() if _untyped(h)}
    assert not bad, f"{name}: {bad}"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_stage_entry_points_return_declared_types(name):
    bad = _untyped(_boundary_hints(ENTRY_POINTS[name], params=False)["return"])
    assert not bad, f"{name} returns {bad}"


def test_gates_return_a_report_that_summarises_to_a_declared_type():
    hints = typing.get_type_hints(gates.validate_raw)
    summary = typing.get_type_hints(hints["return"].summary)["return"]
    assert not _untyped(summary), summary
