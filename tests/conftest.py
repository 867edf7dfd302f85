"""Runs the Triton kernels through the interpreter when no GPU is present."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # fp32 references (nn.LSTM through cuDNN, torch matmuls) must be fp32: TF32 would make them the
    # least accurate side of every 2x-rule comparison.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

from hypothesis import HealthCheck, settings  # noqa: E402

# "ci" keeps the interpreter runs short; HYPOTHESIS_PROFILE=thorough searches far wider.
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gpu", max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# CI's second pass, the kernels under the newest Triton's interpreter: a handful of examples each
settings.register_profile("fast", max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the benchmarks in tests/benchmarks through pytest-benchmark")


def pytest_configure(config):
    config.addinivalue_line("markers", "benchmark_gpu: a seqbench benchmark, run only with --benchmark")
    config.addinivalue_line("markers", "spread_rule: a test of the spread rule itself (it keeps the real limits)")


@pytest.fixture(autouse=True)
def _spread_rule_off_unless_tested(request, monkeypatch):
    """Tests of the sweep's mechanics must not depend on how busy this machine is: the spread rule's limits are
    infinite there and a CPU point is timed in one short window (SEQBENCH_CPU_PASSES=1 and SEQBENCH_CPU_WINDOW_S
    for the processes they start), except in tests marked ``spread_rule``, which drive the rule and the passes
    with timings of their own, and in the benchmarks, which measure for real."""
    if "spread_rule" in request.keywords or "benchmark_gpu" in request.keywords:
        return
    from bench.measure import timing
    for device in list(timing.SPREAD_LIMIT):
        monkeypatch.setitem(timing.SPREAD_LIMIT, device, float("inf"))
    monkeypatch.setattr(timing, "CPU_PASSES", 1)
    monkeypatch.setenv("SEQBENCH_CPU_PASSES", "1")      # and in the seqbench processes a test starts
    # one short window per point: the tests check what a point records, not how well it is timed
    monkeypatch.setattr(timing, "CPU_MIN_S", 0.01)
    monkeypatch.setattr(timing, "CPU_MAX_S", 0.1)
    monkeypatch.setenv("SEQBENCH_CPU_WINDOW_S", "0.01,0.1")
    monkeypatch.setattr(timing, "HOST_WAIT_S", 0.0)      # nor wait for a quiet host
    monkeypatch.setenv("SEQBENCH_HOST_WAIT_S", "0")


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A CPU sweep sets torch's threads for its process (bench.measure.timing.cpu_threads); a test's leaves the
    rest of the session as it was."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark") or config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with --benchmark (or pytest-benchmark's --benchmark-only)")
    for item in items:
        if "benchmark_gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)   # pytest-benchmark's hook: fine where that plugin is not installed
def pytest_benchmark_update_machine_info(config, machine_info):
    import triton
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        machine_info["gpu"] = {"name": p.name, "sm_count": p.multi_processor_count,
                               "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    else:
        machine_info["gpu"] = None


def pytest_runtest_logreport(report):
    """With SEQBENCH_FAILURE_LOG set, every failure's traceback is appended to that file as it happens,
    so a test step killed at its time limit (the GPU job) still reports what failed."""
    path = os.environ.get("SEQBENCH_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a") as f:
            f.write(f"=== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")

