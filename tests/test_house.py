"""Every kernel family is complete: kernels/<name>.py has reference/<name>.py, tests/test_<name>.py, a
workload module bench/workloads/<name>.py declaring at least one workload, and ``compile_builds`` for
`seqbench inspect`.  Found by walking the packages: adding a family is adding those four files."""
import importlib
import os
import pkgutil

import pytest

import kernels
from bench import kernel_inspect
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
