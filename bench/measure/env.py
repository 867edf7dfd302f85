"""Environment metadata recorded with every run: hardware, software versions, commit."""
from __future__ import annotations

import os
import platform
import re
import subprocess

import torch


def git_commit() -> str:
    """The checkout's commit (with -dirty), or SEQBENCH_COMMIT for a copy of the tree without .git
    (the GPU machine may get one)."""
    if os.environ.get("SEQBENCH_COMMIT"):
        return os.environ["SEQBENCH_COMMIT"] + " (from SEQBENCH_COMMIT)"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the checkout
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 9554 64-Core Processor"), from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name() -> str:
    """The GPU's model, or the CPU's with its usable cores ("CPU: AMD EPYC (2 cores, x86_64)")."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return f"CPU: {cpu_model()} ({cores} cores, {platform.machine()})"


def device_slug() -> str:
    """A folder-safe device name: 'nvidia-h100-80gb-hbm3', 'cpu-x86_64'."""
    name = device_name() if torch.cuda.is_available() else f"cpu-{platform.machine()}"
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")


def _version(package: str) -> str | None:
    from bench.peers import version
    return version(package)


def environment(nvml_info: dict | None = None) -> dict:
    import triton
    env = {
        "device": device_name(),
        "gpu": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "seqbench_commit": git_commit(),
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "fla_core": _version("fla-core") or "not installed",
        "flashrnn": _version("flashrnn") or "not installed",
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update({
            "sm_count": p.multi_processor_count,
            "compute_capability": f"{p.major}.{p.minor}",
            "gpu_memory_gib": round(p.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "sdpa_backends_enabled": {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            },
        })
    env["nvml"] = nvml_info or {}
    return env
