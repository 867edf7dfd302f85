"""Every kernel family is complete: kernels/<name>.py has reference/<name>.py, tests/test_<name>.py, a
workload module bench/workloads/<name>.py declaring at least one workload, and ``compile_builds`` for
`seqbench inspect`.  Found by walking the packages: adding a family is adding those four files."""
import importlib
import os
import pkgutil

import pytest

import kernels
from bench.tools import kernel_inspect
from bench.workloads import BY_MODULE, WORKLOADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = [m.name for m in pkgutil.iter_modules(kernels.__path__) if not m.name.startswith("_")]


def test_there_are_families():
    assert {"attention", "lstm", "gru", "lstm_persistent"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_complete(family):
    module = importlib.import_module(f"kernels.{family}")
    assert os.path.exists(os.path.join(ROOT, "reference", f"{family}.py")), f"reference/{family}.py is missing"
    importlib.import_module(f"reference.{family}")
    assert os.path.exists(os.path.join(ROOT, "tests", f"test_{family}.py")), f"tests/test_{family}.py is missing"
    assert BY_MODULE.get(family), f"bench/workloads/{family}.py declares no workload"
    assert callable(getattr(module, "compile_builds", None)), f"kernels/{family}.py has no compile_builds"
    assert family in kernel_inspect.KERNEL_MODULES


def test_every_workload_has_a_baseline_and_its_modules_checks_run():
    for w in WORKLOADS.values():
        assert w.baseline is not None, f"{w.name} has no baseline implementation"
        assert any(i.triton for i in w.impls.values()), f"{w.name} runs no Triton kernel"
    checked = {w for family in FAMILIES for w in BY_MODULE[family] if WORKLOADS[w].checks}
    assert checked, "no kernel family declares an interpreter check"
    for family in FAMILIES:
        assert any(WORKLOADS[w].checks for w in BY_MODULE[family]), f"bench/workloads/{family}.py has no check"


def _bench_imports() -> dict[str, set[str]]:
    """bench.* module -> the bench.* modules it imports anywhere in its file (function-level imports too: a
    lazy import is still a dependency)."""
    import ast
    root = os.path.join(ROOT, "bench")
    graph = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            deps = set()
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
                    deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.startswith("bench")}
            graph[mod] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_bench_has_no_import_cycle():
    """Issue 24: bench/ as folders that show its parts, none importing back into another that imports it
    (packages' own __init__ re-exports aside: they import nothing)."""
    graph = _bench_imports()
    assert {"bench.sweep.run", "bench.report.report", "bench.train.train", "bench.tools.gpu_suite"} <= set(graph)
    state, cycle = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycle.append(path + [m, d])
            elif d not in state:
                visit(d, path + [m])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycle, cycle[0]
