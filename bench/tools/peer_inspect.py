"""``seqbench inspect --peers``: our recurrent and attention kernels compiled beside the public Triton
kernels that do the same job, at matched shapes, for sm_80 and sm_90a, with the static counts side by side
and ours ÷ peer.  No GPU is needed (``kernel_inspect.compile_sass``).

The peers' ``@triton.jit`` functions are compiled directly: their parameters come from their own sources
(Triton parses them), the arguments are ours at the matched shape, and their candidate configs are
their autotuners' lists (or the one config their launcher passes).  Nothing of theirs is copied.

A side (ours or the peer's) is one or more kernels (a chunked scan is a pass over the chunks, then one
over the carries).  For each kernel, the candidate with the fewest instructions per unit of work is
taken ("best against best"), and the side's per-unit counts are the sum over its kernels.

The units of work, per trip of a kernel's main loop (``kernel_inspect.main_loop``):
* element (the scans): the (batch, step, state lane) elements a program covers in one trip;
  instructions per element = instructions × threads ÷ elements, since each thread runs the loop;
* step (the LSTMs): one time step of one program (one head × 16 batch rows on both sides);
  non-MMA warp-instructions per step = (instructions − MMAs) × warps;
* mma (attention): non-MMA instructions per tensor-core MMA in the hot loop (``kernel_inspect.hot_loop``).
A trip the compiler unrolled covers ``main_loop``'s ``steps`` source steps: the work is multiplied by them
(the chunked scan's reduce pass, with no store in its loop, is unrolled 4×).

Targets (#26) sit beside the metrics: ``ratio ≤ x`` against the peer, or ``ours ≤ x`` where no peer compiles;
a comparison may name an alternative that meets its target instead (``otherwise``: the attention pointer
path is not shipped where TMA applies), and the record's note says so.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.schema import describe
from bench.tools import kernel_inspect as ki


@dataclass(frozen=True)
class Kernel:
    """One kernel of a side at the matched shape: its candidate (args, config) pairs and the work one trip of
    its main loop does in one program (``work(args)``: elements or time steps)."""
    name: str
    fn: object
    candidates: tuple            # ((args, triton.Config), ...)
    work: Callable[[dict], int]


@dataclass(frozen=True)
class Comparison:
    kernel: str                  # ours: "scan.sequential.fwd"
    peer: str                    # "fla fused_recurrent_hgrn" (empty: ours against an absolute limit)
    shape: str
    unit: str                    # "element", "step" or "mma"
    ours: Callable[[str], list]  # arch family ("sm80"/"sm90") -> [Kernel]
    theirs: Callable[[str], list] | None = None
    targets: dict = field(default_factory=dict)   # metric -> the most ours ÷ peer may be
    limits: dict = field(default_factory=dict)    # metric -> the most ours may be
    archs: tuple = tuple(ki.ARCHS)
    needs: str = ""              # the module the peer side imports (skipped without it)
    otherwise: Callable[[], str] | None = None    # the target's alternative: a reason it holds, or "" if not


UNIT_METRICS = {
    "element": ("instructions_per_element", "global_bytes_per_element"),
    "step": ("non_mma_per_step", "mma_per_step", "barriers_per_step", "global_loads_per_step"),
    "mma": ("non_mma_per_mma",),
}
RESOURCE_METRICS = ("registers", "spill_bytes", "shared_bytes")


def jit_function(obj):
    """The JITFunction under a peer's Heuristics/Autotuner wrappers, with its autotuner's configs (or None)
    and its heuristics (name -> function of the arguments)."""
    configs, heuristics = None, {}
    while not hasattr(obj, "params"):
        configs = getattr(obj, "configs", configs)
        heuristics.update(getattr(obj, "values", {}))
        obj = obj.fn
    return obj, configs, heuristics


def _per_unit(unit: str, counts: dict, warps: int, work: int) -> dict:
    work = work * counts["steps"]               # an unrolled trip covers several steps
    if unit == "element":
        return dict(instructions_per_element=counts["instructions"] * 32 * warps / work,
                    global_bytes_per_element=counts["global_bytes"] * 32 * warps / work)
    if unit == "step":
        return dict(non_mma_per_step=(counts["instructions"] - counts["mma"]) * warps / work,
                    mma_per_step=counts["mma"] * warps / work, barriers_per_step=counts["barriers"] / work,
                    global_loads_per_step=counts["loads"] / work)
    instructions, mmas = counts["hot_loop"]
    return dict(non_mma_per_mma=(instructions - mmas) / mmas if mmas else float("nan"))


def _reason(exc: BaseException) -> str:
    """The innermost cause of a compile error in one line (Triton wraps the real message in source excerpts)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return describe(exc, 160)


def compile_kernel(kernel: Kernel, unit: str, arch: str) -> dict:
    """The best candidate of one kernel: its config, resources and per-unit counts; ``error`` if none compiles."""
    best, errors = None, []
    primary = UNIT_METRICS[unit][0]
    for args, cfg in kernel.candidates:
        full = dict(args, **cfg.kwargs)
        try:
            compiled, res, sass = ki.compile_sass(kernel.fn, full, cfg.num_warps, cfg.num_stages, arch)
        except Exception as exc:  # a peer's kernel that does not compile is a finding
            errors.append(_reason(exc))
            continue
        counts = dict(ki.main_loop(sass), hot_loop=ki.hot_loop(sass))
        row = dict(kernel=kernel.name, config=" ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
                   + f" warps={cfg.num_warps} stages={cfg.num_stages}",
                   **ki.resources(compiled, res), **_per_unit(unit, counts, cfg.num_warps, kernel.work(full)))
        if best is None or row[primary] < best[primary]:
            best = row
    return best or dict(kernel=kernel.name, error=errors[-1] if errors else "no candidate config")


def side(kernels: list, unit: str, arch: str) -> dict:
    """A side's metrics: per-unit counts summed over its kernels, resources the largest; ``error`` if any fails."""
    rows = [compile_kernel(k, unit, arch) for k in kernels]
    failed = [r for r in rows if "error" in r]
    if failed:
        return dict(error=f"{failed[0]['kernel']}: {failed[0]['error']}", kernels=rows)
    out = {m: sum(r[m] for r in rows) for m in UNIT_METRICS[unit]}
    out.update({m: max(r[m] for r in rows) for m in RESOURCE_METRICS})
    out["spill_bytes"] = sum(r["spill_bytes"] for r in rows)
    out["config"] = "; ".join(f"{r['kernel']}: {r['config']}" for r in rows)
    return out


def _available(module: str) -> bool:
    return not module or importlib.util.find_spec(module) is not None


def compare(c: Comparison, arch: str) -> list[dict]:
    """One record per metric: kernel, peer, arch, metric, ours, peer_value, ratio, target and whether it is met."""
    family = ki.ARCHS[arch]["family"]
    ours = side(c.ours(family), c.unit, arch)
    if c.theirs is None:
        theirs = None
    elif not _available(c.needs):
        theirs = dict(error=f"{c.needs} is not installed (pip install -e '.[peers]')")
    else:
        theirs = side(c.theirs(family), c.unit, arch)
    records = []
    for metric in UNIT_METRICS[c.unit] + RESOURCE_METRICS:
        mine = ours.get(metric)
        peer_value = theirs.get(metric) if theirs else None
        ratio = mine / peer_value if mine is not None and peer_value else None
        rec = dict(kernel=c.kernel, peer=c.peer or "-", arch=arch, shape=c.shape, metric=metric,
                   ours=_round(mine), peer_value=_round(peer_value), ratio=_round(ratio), target="", met=None,
                   ours_config=ours.get("config", ""), peer_config=(theirs or {}).get("config", ""),
                   note="; ".join(x for x in (ours.get("error", "") and f"ours: {ours['error']}",
                                              (theirs or {}).get("error", "") and f"peer: {theirs['error']}") if x))
        if metric in c.targets:
            rec["target"] = f"ratio <= {c.targets[metric]}"
            # a peer that does not compile (FlashRNN's block pointers under triton 3.9) leaves the ratio
            # unjudged, not failed; ours failing to compile fails it
            unjudged = ratio is None and mine is not None and (theirs or {}).get("error")
            rec["met"] = None if unjudged else (ratio is not None and ratio <= c.targets[metric])
            instead = c.otherwise() if c.otherwise and rec["met"] is False else ""
            if instead:
                rec["met"], rec["note"] = True, "; ".join(x for x in (rec["note"], f"met instead: {instead}") if x)
        if metric in c.limits:
            rec["target"] = (rec["target"] + "; " if rec["target"] else "") + f"ours <= {c.limits[metric]}"
            rec["met"] = (rec["met"] is not False) and mine is not None and mine <= c.limits[metric]
        records.append(rec)
    return records


def _round(x):
    return None if x is None else round(float(x), 3)


# ------------------------------------------------------------------------------- the matched shapes

def _ours(module: str, name: str, keep=lambda args, cfg: True, work=lambda args: 1):
    """Our side: the builds ``kernels.<module>.compile_builds`` yields under ``name`` (the shapes `seqbench
    inspect` compiles) for which ``keep(args, cfg)`` holds, as one Kernel."""
    def build(family):
        import torch
        builds = [(fn, args, cfg) for n, fn, args, cfg in
                  importlib.import_module(f"kernels.{module}").compile_builds(family, (torch.float16,))
                  if n == name and keep(args, cfg)]
        return [Kernel(name, builds[0][0], tuple((args, cfg) for _, args, cfg in builds), work)]
    return build


def _meta(*shape, dtype="float16"):
    import torch
    return torch.empty(*shape, device="meta", dtype=getattr(torch, dtype))


SCAN_B, SCAN_T, SCAN_D = 16, 1024, 1024     # kernels.scan.compile_builds's shape


def _fla(module: str, kernel: str, args: Callable[[], dict], work, configs=None):
    """A flash-linear-attention kernel: its autotuner's configs (or ``configs``, its launcher's), its
    heuristics applied to the arguments."""
    def build():
        fn, tuned, heuristics = jit_function(getattr(importlib.import_module(module), kernel))
        a = args()
        a.update({k: h(a) for k, h in heuristics.items()})
        return Kernel(f"fla {kernel}", fn, tuple((a, c) for c in (configs or tuned)), work)
    return build


def _hgrn_fwd_args():
    x = _meta(SCAN_B, SCAN_T, SCAN_D)
    return dict(x=x, g=x, o=x, h0=_meta(SCAN_B, SCAN_D), ht=None, cu_seqlens=None, T=SCAN_T, D=SCAN_D)


def _hgrn_bwd_args():
    x = _meta(SCAN_B, SCAN_T, SCAN_D)
    return dict(g=x, o=x, h0=_meta(SCAN_B, SCAN_D), dx=x, dg=x, do=x, dht=None, dh0=_meta(SCAN_B, SCAN_D),
                cu_seqlens=None, T=SCAN_T, D=SCAN_D)


def _chunk_args(names):
    def args():
        x, f32 = _meta(SCAN_B, SCAN_T, SCAN_D), _meta(SCAN_B, SCAN_T, SCAN_D, dtype="float32")
        pool = dict(x=x, g=x, gc=f32, o=f32, h0=_meta(SCAN_B, SCAN_D), dx=f32, do=x, dg=f32, T=SCAN_T, D=SCAN_D,
                    BT=128, s_b=SCAN_T * SCAN_D, s_t=SCAN_D, s_d=1, USE_INITIAL_STATE=True)
        return {n: pool[n] for n in names}
    return args


def _chunk_o_config():
    import triton
    return [triton.Config({"BD": 64}, num_warps=8)]   # fla's launcher: BD = min(64, D), 8 warps


FLA_HGRN = "fla.ops.hgrn"
_lanes = lambda a: a["BD"]                                  # noqa: E731   one step of BD lanes
_chunk_tile = lambda a: a["BT"] * a["BD"]                   # noqa: E731   a (BT, BD) tile


def _peer(*builds):
    return lambda family: [b() for b in builds]


def _passes(*builds):
    """A side of several of our kernels (each an ``_ours`` build), in launch order."""
    return lambda family: [k for b in builds for k in b(family)]


_our_lanes = lambda a: a["BLOCK_D"]                        # noqa: E731   one step of BLOCK_D lanes
_our_chunks = lambda a: a["BLOCK_D"] * SCAN_T / a["NC"]     # noqa: E731   one chunk map: T / NC steps of each lane


LSTM_NH, LSTM_DH, LSTM_B, LSTM_T = 12, 64, 16, 1024        # kernels.lstm_persistent's "heads12x64" layout


def _flashrnn(kernel: str, module: str, args: Callable[[], dict], configs=None):
    def build():
        import triton
        fn, tuned, _ = jit_function(getattr(importlib.import_module(module), kernel))
        cfgs = configs or tuned or [triton.Config({}, num_warps=4, num_stages=1)]
        return Kernel(f"flashrnn {kernel}", fn, tuple((args(), c) for c in cfgs), lambda a: 1)
    return build


def _flashrnn_fwd_args():
    import triton.language as tl
    NH, DH, B, T = LSTM_NH, LSTM_DH, LSTM_B, LSTM_T
    return dict(states_initial=_meta(NH, 2, B, DH), Wx=_meta(NH, T, 4, B, DH), R=_meta(NH, 4, DH, DH),
                b=_meta(NH, 4, DH), states_all=_meta(NH, T + 1, 2, B, DH), gates_all=_meta(NH, T, 4, B, DH),
                T=T, NS=2, B=B, NH=NH, DH=DH, NGI=4, NGR=4, OUTPUT_GATES=True, DTYPE=tl.float16)


def _flashrnn_bwd_args():
    import triton.language as tl
    NH, DH, B, T = LSTM_NH, LSTM_DH, LSTM_B, LSTM_T
    return dict(delta_states_all_outside=_meta(NH, T, 2, B, DH), delta_states_last_outside=_meta(NH, 2, B, DH),
                R=_meta(NH, 4, DH, DH), states_all=_meta(NH, T + 1, 2, B, DH), gates_all=_meta(NH, T, 4, B, DH),
                delta_states_initial=_meta(NH, 2, B, DH), delta_Wx=_meta(NH, T, 4, B, DH),
                delta_R=_meta(1, NH, 4, DH, DH), delta_b=_meta(1, NH, 4, DH),
                T=T, NS=2, B=B, NH=NH, DH=DH, NGI=4, NGR=4, siz_B=16, DTYPE=tl.float16,
                backward_recurrent_clip_val=-1.0)


def _flashrnn_bwd_config():
    import triton
    return [triton.Config({}, num_warps=4, num_stages=1)]   # its launcher: siz_B=16, 4 warps


FLASHRNN = "flashrnn.flashrnn.triton_fused"
_one_step = lambda a: 1                                     # noqa: E731
_attention_d128 = lambda a, c, tma: a["HEAD_DIM"] == 128 and bool(c.kwargs.get("USE_TMA")) == tma   # noqa: E731


def _pointer_not_taken() -> str:
    """#26's alternative for the attention target: the pointer path is not shipped where TMA applies (the
    forward, sm90, 16-bit, no key mask: kernels.attention.configs_for gives TMA configs only)."""
    import torch

    from kernels.attention import CONFIGS, configs_for
    taken = [c for d in CONFIGS["fwd"]["sm90"] for dt in (torch.float16, torch.bfloat16)
             for c in configs_for("fwd", "sm90", d, dt, tma=True) if not c.kwargs.get("USE_TMA")]
    return "" if taken else "the pointer path is not shipped where TMA applies (configs_for: TMA configs only)"


SCAN_SHAPE = f"B {SCAN_B}, T {SCAN_T}, D {SCAN_D}, fp16 in, fp32 state, h0"
LSTM_SHAPE = f"{LSTM_NH} heads x {LSTM_DH}, B {LSTM_B}, T {LSTM_T}, fp16"

COMPARISONS = (
    Comparison("scan.sequential.fwd", "fla fused_recurrent_hgrn_fwd", SCAN_SHAPE, "element",
               _ours("scan", "scan.seq_fwd", work=_our_lanes),
               _peer(_fla(f"{FLA_HGRN}.fused_recurrent", "fused_recurrent_hgrn_fwd_kernel", _hgrn_fwd_args, _lanes)),
               targets={"instructions_per_element": 1.2}, needs="fla"),
    Comparison("scan.sequential.bwd", "fla fused_recurrent_hgrn_bwd", SCAN_SHAPE, "element",
               _ours("scan", "scan.seq_bwd", work=_our_lanes),
               _peer(_fla(f"{FLA_HGRN}.fused_recurrent", "fused_recurrent_hgrn_bwd_kernel", _hgrn_bwd_args, _lanes)),
               targets={"instructions_per_element": 1.2}, needs="fla"),
    Comparison("scan.chunked.fwd", "fla chunk_hgrn fwd (h, o)", SCAN_SHAPE, "element",
               _passes(_ours("scan", "scan.chunk_reduce.fwd", work=_our_lanes),
                       _ours("scan", "scan.chunk_carry.fwd", work=_our_chunks),
                       _ours("scan", "scan.chunk_fwd", work=_our_lanes)),
               _peer(_fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_fwd_kernel_h",
                          _chunk_args(("x", "g", "gc", "o", "h0", "T", "D", "BT", "USE_INITIAL_STATE")), _lanes),
                     _fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_fwd_kernel_o",
                          _chunk_args(("gc", "o", "s_b", "s_t", "s_d", "T", "D", "BT")), _chunk_tile,
                          configs=_chunk_o_config())),
               targets={"instructions_per_element": 1.2}, needs="fla"),
    Comparison("scan.chunked.bwd", "fla chunk_hgrn bwd (h, o)", SCAN_SHAPE, "element",
               _passes(_ours("scan", "scan.chunk_reduce.bwd", work=_our_lanes),
                       _ours("scan", "scan.chunk_carry.bwd", work=_our_chunks),
                       _ours("scan", "scan.chunk_bwd", work=_our_lanes)),
               _peer(_fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_bwd_kernel_h",
                          _chunk_args(("g", "gc", "dx", "do", "T", "D", "BT")), _lanes),
                     _fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_bwd_kernel_o",
                          _chunk_args(("g", "gc", "o", "dx", "dg", "s_b", "s_t", "s_d", "T", "D", "BT")), _chunk_tile,
                          configs=_chunk_o_config())),
               targets={"instructions_per_element": 1.2}, needs="fla"),
    # the associative plan: no shape picks it (kernels.scan.plan_for), so beside fla's for reference, no target
    Comparison("scan.associative.fwd", "fla chunk_hgrn fwd (h, o)", SCAN_SHAPE, "element",
               _ours("scan", "scan.fwd", work=lambda a: a["BLOCK_T"] * a["BLOCK_D"]),
               _peer(_fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_fwd_kernel_h",
                          _chunk_args(("x", "g", "gc", "o", "h0", "T", "D", "BT", "USE_INITIAL_STATE")), _lanes),
                     _fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_fwd_kernel_o",
                          _chunk_args(("gc", "o", "s_b", "s_t", "s_d", "T", "D", "BT")), _chunk_tile,
                          configs=_chunk_o_config())),
               needs="fla"),
    Comparison("scan.associative.bwd", "fla chunk_hgrn bwd (h, o)", SCAN_SHAPE, "element",
               _ours("scan", "scan.bwd", work=lambda a: a["BLOCK_T"] * a["BLOCK_D"]),
               _peer(_fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_bwd_kernel_h",
                          _chunk_args(("g", "gc", "dx", "do", "T", "D", "BT")), _lanes),
                     _fla(f"{FLA_HGRN}.chunk", "chunk_hgrn_bwd_kernel_o",
                          _chunk_args(("g", "gc", "o", "dx", "dg", "s_b", "s_t", "s_d", "T", "D", "BT")), _chunk_tile,
                          configs=_chunk_o_config())),
               needs="fla"),
    Comparison("lstm_persistent.fwd", "flashrnn triton_fused fwd", LSTM_SHAPE, "step",
               _ours("lstm_persistent", "lstm_persistent.fwd.heads12x64", work=_one_step),
               _peer(_flashrnn("_forward_sequence_kernel", f"{FLASHRNN}.lstm_fw", _flashrnn_fwd_args)),
               targets={"non_mma_per_step": 1.0}, needs="flashrnn"),
    Comparison("lstm_persistent.bwd", "flashrnn triton_fused bwd", LSTM_SHAPE, "step",
               _ours("lstm_persistent", "lstm_persistent.bwd.heads12x64", work=_one_step),
               _peer(_flashrnn("_backward_sequence_kernel", f"{FLASHRNN}.lstm_bw", _flashrnn_bwd_args,
                               configs=_flashrnn_bwd_config())),
               limits={"barriers_per_step": 20}, needs="flashrnn"),
    Comparison("attention.fwd.pointer", "ours, TMA path", "B 2, H 8, N 1024, D 128, fp16", "mma",
               _ours("attention", "attention.fwd", keep=lambda a, c: _attention_d128(a, c, False)),
               lambda family: _ours("attention", "attention.fwd", keep=lambda a, c: _attention_d128(a, c, True))(family),
               targets={"non_mma_per_mma": 1.05}, archs=("sm_90a",), otherwise=_pointer_not_taken),
)


def _task(task) -> list[dict]:
    index, arch = task
    return compare(COMPARISONS[index], arch)


def comparisons_for(names, archs) -> list[tuple[int, str]]:
    """(index into COMPARISONS, arch) for the comparisons ``names`` pick on ``archs``: a name is a kernel
    family ("scan") or a leading part of a comparison's name ("scan.sequential")."""
    return [(i, a) for i, c in enumerate(COMPARISONS) for a in archs
            if a in c.archs and any(c.kernel.startswith(n + ".") or c.kernel == n for n in names)]


def inspect_peers(archs=tuple(ki.ARCHS), jobs=None, families=None) -> list[dict]:
    """The comparisons ``families`` picks (``comparisons_for``; default all) on every arch each applies to;
    one record per (comparison, arch, metric)."""
    families = tuple(families or ki.KERNEL_MODULES)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):    # the interpreter replaced the jit functions
        return _in_child(archs, jobs, families)
    tasks = comparisons_for(families, archs)
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        return [r for t in tasks for r in _task(t)]
    import concurrent.futures
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        return [r for rows in pool.map(_task, tasks) for r in rows]


def _in_child(archs, jobs, families) -> list[dict]:
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "bench.tools.inspect_cli", "--peers", "--json", "-", "--arch", ",".join(archs),
           "--only", ",".join(families)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the checkout
    out = subprocess.run(cmd + (["--jobs", str(jobs)] if jobs else []), env=env, cwd=root, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"inspect --peers child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def to_markdown(records: list[dict]) -> str:
    import pandas as pd
    if not records:
        return "(no comparison records)"
    df = pd.DataFrame(records)
    df["met"] = df["met"].map({True: "yes", False: "**no**", None: ""})
    return df.drop(columns=["ours_config", "peer_config"]).to_markdown(index=False)
