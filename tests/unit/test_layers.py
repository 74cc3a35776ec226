"""The package graph of ``nightrec`` has no cycles, and MLflow has one home (the import-linter contract in
pyproject.toml says the same; this test names the modules when it fails)."""

from __future__ import annotations

import itertools

import grimp


def _graph():
    return grimp.build_graph("nightrec", include_external_packages=True, cache_dir=None)


def test_no_two_packages_of_nightrec_import_each_other():
    graph = _graph()
    children = sorted(graph.find_children("nightrec"))
    cycles = []
    for a, b in itertools.combinations(children, 2):
        ab = graph.find_shortest_chain(a, b, as_packages=True)
        ba = graph.find_shortest_chain(b, a, as_packages=True)
        if ab and ba:
            cycles.append(f"{a} <-> {b}: {' -> '.join(ab)} | {' -> '.join(ba)}")
    assert not cycles, "\n".join(cycles)


def test_only_the_registry_imports_mlflow():
    graph = _graph()
    importers = {m for m in graph.find_modules_that_directly_import("mlflow") if m.startswith("nightrec")}
    assert importers == {"nightrec.registry"}
