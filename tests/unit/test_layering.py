"""The package's shape: no import cycle (function-local imports included), and no package importing one above it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "mlray"
# package → the mlray packages it must never import (each also may not import the CLI)
NEVER = {
    "mlray.spec": {"mlray."},
    "mlray.lake": {"mlray.features", "mlray.registry", "mlray.train", "mlray.batch", "mlray.serve", "mlray.rollout",
                   "mlray.monitor", "mlray.audit"},
    "mlray.features": {"mlray.registry", "mlray.train", "mlray.batch", "mlray.serve", "mlray.rollout", "mlray.monitor"},
    "mlray.registry": {"mlray.train", "mlray.batch", "mlray.serve", "mlray.rollout", "mlray.monitor"},
    "mlray.serve": {"mlray.train", "mlray.rollout", "mlray.monitor", "mlray.dataplane", "mlray.training",
                    "mlray.retrain", "mlray.demo"},
    "mlray.monitor": {"mlray.train", "mlray.rollout"},
    "mlray.rollout": {"mlray.train", "mlray.batch", "mlray.monitor", "mlray.dataplane", "mlray.training", "mlray.retrain",
                      "mlray.demo"},
    "mlray.fast_ingress": {"mlray."},
    # beside mlray/audit.py: the monitor, the retraining job and the rollout controller all write it
    "mlray.incidents": {"mlray.features", "mlray.registry", "mlray.train", "mlray.batch", "mlray.serve", "mlray.rollout",
                        "mlray.monitor", "mlray.runtime", "mlray.demo", "mlray.retrain", "mlray.dataplane"},
    # beside it too: the monitor writes a window's report, the rollout controller reads its estimates
    "mlray.window_reports": {"mlray.features", "mlray.registry", "mlray.train", "mlray.batch", "mlray.serve",
                             "mlray.rollout", "mlray.monitor", "mlray.runtime", "mlray.demo", "mlray.retrain",
                             "mlray.dataplane"},
    # the data-plane stages (ingest, validate, fit features) sit just above lake and features: training and batch
    # prediction build on them
    "mlray.dataplane": {"mlray.registry", "mlray.train", "mlray.batch", "mlray.serve", "mlray.rollout", "mlray.monitor",
                        "mlray.training", "mlray.retrain", "mlray.demo"},
    "mlray.control": {"mlray.lake", "mlray.features", "mlray.registry", "mlray.train", "mlray.batch", "mlray.serve",
                      "mlray.rollout", "mlray.monitor", "mlray.audit", "mlray.runtime", "mlray.demo", "mlray.retrain",
                      "mlray.dataplane"},
}
# anyone may import these: they import nothing of mlray but each other (errors hide credentials with redaction)
LEAVES = {"mlray.errors", "mlray.redaction"}


def module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the mlray modules it imports anywhere in its text (a function-local import counts)."""
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlray"):
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_not_even_behind_a_function_local_import():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def forbidden(package: str, target: str) -> bool:
    """Whether a module of `package` may not import `target`."""
    if target in LEAVES or target == package or target.startswith(package + "."):
        return False
    return target.startswith("mlray.cli") or any(target.startswith(prefix) for prefix in NEVER[package])


@pytest.mark.parametrize("package", sorted(NEVER))
def test_no_package_imports_one_above_it(package):
    wrong = sorted(f"{name} imports {target}" for name, imports in import_graph().items()
                   if name == package or name.startswith(package + ".")
                   for target in imports if forbidden(package, target))
    assert wrong == []


def test_leaves_import_only_leaves():
    graph = import_graph()
    assert {leaf: graph[leaf] - LEAVES for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}
