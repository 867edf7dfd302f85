"""Compile every shipped kernel configuration for a GPU architecture on this (CPU) machine and read
what the compiler decided: registers, spills, shared memory, occupancy and the SASS that matters.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", cap, 32))`` needs no GPU; the cubin is
read with the ``cuobjdump`` shipped in the triton wheel.  The Triton interpreter replaces
``@triton.jit`` functions at import, so when TRITON_INTERPRET is set the compiles re-run in a child
process without it.  The command, ``seqbench inspect``, is bench.tools.inspect_cli.
"""
from __future__ import annotations

import collections
import concurrent.futures
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

from bench.schema import describe

# name -> (compute capability, config family in the kernel tables, per-SM limits)
ARCHS = {
    "sm_80": dict(cap=80, family="sm80", smem_per_sm=167936, smem_per_block=166912),
    "sm_90a": dict(cap=90, family="sm90", smem_per_sm=233472, smem_per_block=232448),
}
REGS_PER_SM = 65536
MAX_THREADS_PER_SM = 2048
MAX_BLOCKS_PER_SM = 32
SMEM_RESERVED_PER_BLOCK = 1024


def kernel_families() -> tuple[str, ...]:
    """The modules of the ``kernels`` package with ``compile_builds(family, dtypes)``, found by walking it."""
    import kernels
    names = []
    for m in pkgutil.iter_modules(kernels.__path__):
        if not m.name.startswith("_") and hasattr(importlib.import_module(f"kernels.{m.name}"), "compile_builds"):
            names.append(m.name)
    return tuple(names)


KERNEL_MODULES = kernel_families()


def wgmma_exceptions() -> dict:
    """(kernel, head dim) -> why it uses mma.sync instead of wgmma, as each family declares in ``WGMMA_EXCEPT``."""
    out = {}
    for m in KERNEL_MODULES:
        out.update(getattr(importlib.import_module(f"kernels.{m}"), "WGMMA_EXCEPT", {}))
    return out


def wgmma_kernels() -> tuple[str, ...]:
    """Kernel-name prefixes that must issue HGMMA on sm_90a in 16 bits, as each family declares in ``WGMMA``."""
    return tuple(k for m in KERNEL_MODULES for k in getattr(importlib.import_module(f"kernels.{m}"), "WGMMA", ()))


SASS_COUNTED = ("HGMMA", "HMMA", "LDGSTS", "UTMALDG", "LDG", "LDSM", "LDL", "STL")
_SASS_OP = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)", re.M)
_SASS_INSTR = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)([^;]*);", re.M)
_BRA_TARGET = re.compile(r"0x([0-9a-f]+)")


_EXIT = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+EXIT\b", re.M)     # an unpredicated EXIT


def loops(sass: str) -> tuple[list, list]:
    """(instructions as (address, op, operands), loops as (first, last) addresses).  A loop is a backward
    branch that does not cross an unpredicated EXIT: the out-of-line stubs after the function's end (an
    mbarrier wait that retries, then jumps back into the body) branch backwards too, but are no loop."""
    instrs = [(int(a, 16), op, rest) for a, op, rest in _SASS_INSTR.findall(sass)]
    exits = [int(a, 16) for a in _EXIT.findall(sass)]
    spans = []
    for addr, op, rest in instrs:
        target = _BRA_TARGET.search(rest) if op == "BRA" else None
        start = int(target.group(1), 16) if target else None
        if start is not None and start < addr and not any(start <= e <= addr for e in exits):
            spans.append((start, addr))
    return instrs, spans


def hot_loop(sass: str) -> tuple[int, int]:
    """(instructions, tensor-core MMAs) of the kernel's hot loop: of the loops (backward branches) holding
    the most HGMMA/HMMA, the shortest.  Instructions per MMA there is the proxy for the work around each
    tensor-core op (scaling, exp2, masks, address arithmetic) that the GPU cannot hide.  (0, 0): no loop MMA."""
    instrs, spans = loops(sass)
    best = (0, 0)
    for start, end in spans:
        body = [o for a, o, _ in instrs if start <= a <= end]
        mma = sum(o in ("HGMMA", "HMMA") for o in body)
        if mma > best[1] or (mma == best[1] and mma and len(body) < best[0]):
            best = (len(body), mma)
    return best


# bytes a thread moves in one LDG/STG, by the width modifier (LDG.E.128: 16); none given is 32 bits
_WIDTH = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}


_REG = re.compile(r"\bR(\d+)\b")
_COUNTER = re.compile(r"^\s*R(\d+), R(\d+), (-?)0x([0-9a-f]+)\s*(?:,\s*RZ)?\s*$")   # Rk = Rk ± imm
UNROLLS = (2, 4, 8, 16)       # the factors LLVM unrolls a loop with a runtime trip count by


def steps(body: list) -> int:
    """Source-loop steps one trip of a compiled loop covers.  LLVM unrolls a loop whose trip count is known
    only at run time by k (2, 4, 8 or 16), stepping its counter by k and leaving a remainder loop: the counter
    is a register the loop's last ISETP reads and the body updates by ±k (IADD3 Rk, Rk, -0x4, RZ).  1 where
    there is no such counter.  It reads the counter, not the source: a loop written with a step of 2-16 reads
    that step, so it is meant for loops over single steps (the scans' and the LSTMs' loops over T)."""
    tests = [rest for op, rest in body if op == "ISETP"]
    if not tests:
        return 1
    compared = set(_REG.findall(tests[-1]))
    for op, rest in body:
        m = _COUNTER.match(rest) if op in ("IADD3", "VIADD", "IADD") else None
        if m and m.group(1) == m.group(2) and m.group(1) in compared:
            k = int(m.group(4), 16)
            return k if k in UNROLLS else 1
    return 1


def main_loop(sass: str) -> dict:
    """Counts over the kernel's outermost loop (of its ``loops``, the one spanning the most instructions;
    a nested loop's body counted once): instructions, tensor-core MMAs, block barriers
    (BAR), global loads and stores, the global bytes a thread moves per trip, and the source-loop steps a
    trip covers (``steps``: an unrolled loop's factor).  All zero (steps 1): no loop."""
    instrs, spans = loops(sass)
    span = max(spans, key=lambda s: s[1] - s[0], default=(0, -1))
    body = [(op, rest) for a, op, rest in instrs if span[0] <= a <= span[1]]
    memory = [(op, rest.split()[0].split(".") if rest.startswith(".") else []) for op, rest in body
              if op in ("LDG", "STG")]
    return dict(instructions=len(body), mma=sum(op in ("HGMMA", "HMMA") for op, _ in body),
                barriers=sum(op == "BAR" for op, _ in body), loads=sum(op == "LDG" for op, _ in memory),
                stores=sum(op == "STG" for op, _ in memory),
                global_bytes=sum(next((_WIDTH[m] for m in mods if m in _WIDTH), 4) for _, mods in memory),
                steps=steps(body))


_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


@dataclass
class Row:
    kernel: str
    config: str
    arch: str
    dtype: str
    head_dim: int
    uses_dot: bool                # the kernel's Triton IR holds a tt.dot
    ok: bool = True
    error: str = ""
    registers: int = 0
    spill_bytes: int = 0          # stack frame + local memory: nonzero means registers spilled
    shared_bytes: int = 0
    threads: int = 0
    blocks_per_sm: int = 0
    occupancy: float = 0.0        # resident warps / 64
    sass: dict = field(default_factory=dict)
    hot_loop_instructions: int = 0  # instructions in the loop with the tensor-core ops (see hot_loop)
    instr_per_mma: float = 0.0      # ... per HGMMA/HMMA there


def _tool(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def specialize(fn, args: dict):
    """Signature, constexprs and attributes the JIT would derive from these arguments.

    Mirrors Triton's launch-time specialisation: tensors become pointers aligned to 16 bytes,
    None and an int equal to 1 become constants, an int divisible by 16 is marked so.
    """
    import torch
    pointer = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64",
               torch.int8: "*i8", torch.int16: "*i16", torch.int32: "*i32", torch.int64: "*i64", torch.bool: "*i1"}

    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        if p.name not in args and p.has_default:     # a defaulted constexpr the config does not set
            signature[p.name], constexprs[p.name] = "constexpr", p.default
            continue
        value = args[p.name]
        if p.is_constexpr or value is None:
            signature[p.name], constexprs[p.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[p.name] = pointer[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[p.name] = "i1"
        elif isinstance(value, int) and getattr(p, "do_not_specialize", False):   # the JIT's do_not_specialize
            signature[p.name] = "i64" if abs(value) >= 2**31 else "i32"
        elif isinstance(value, int):
            if value == 1:
                signature[p.name], constexprs[p.name] = "constexpr", 1
            else:
                signature[p.name] = "i64" if abs(value) >= 2**31 else "i32"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[p.name] = "fp32"
        else:
            raise TypeError(f"cannot specialise argument {p.name}={value!r}")
    return signature, constexprs, attrs


def occupancy(regs: int, shared: int, threads: int, arch: dict) -> tuple[int, float]:
    """Resident blocks per SM and warp occupancy from registers, shared memory and threads."""
    warps = threads // 32
    regs_per_warp = -(-regs * 32 // 256) * 256
    limits = [MAX_BLOCKS_PER_SM, MAX_THREADS_PER_SM // threads]
    if regs:
        limits.append(REGS_PER_SM // (regs_per_warp * warps))
    if shared:
        limits.append(arch["smem_per_sm"] // (shared + SMEM_RESERVED_PER_BLOCK))
    blocks = max(0, min(limits))
    return blocks, round(blocks * warps / (MAX_THREADS_PER_SM // 32), 4)


def compile_kernel(fn, args: dict, num_warps: int, num_stages: int, arch_name: str):
    """(compiled kernel, ``cuobjdump -res-usage`` text) of ``fn`` specialised for ``args``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, constexprs, attrs = specialize(fn, args)
    kernel = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", ARCHS[arch_name]["cap"], 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    return kernel, _cuobjdump(kernel, "-res-usage")


def _cuobjdump(kernel, flag: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        return subprocess.run([_tool("cuobjdump"), flag, f.name], capture_output=True, text=True, check=True).stdout


def disassemble(kernel) -> str:
    """The SASS of a compiled kernel (``cuobjdump -sass``: about 0.3 s, as long as a small kernel's compile)."""
    return _cuobjdump(kernel, "-sass")


def compile_sass(fn, args: dict, num_warps: int, num_stages: int, arch_name: str):
    """(compiled kernel, ``cuobjdump -res-usage`` text, SASS) of ``fn`` specialised for ``args``."""
    kernel, res = compile_kernel(fn, args, num_warps, num_stages, arch_name)
    return kernel, res, disassemble(kernel)


def resources(kernel, res: str) -> dict:
    """Registers, spilled bytes (stack frame + local memory) and shared memory of a compiled kernel."""
    regs, stack, shared_static, local = map(int, _RES.search(res).groups())
    return dict(registers=regs, spill_bytes=stack + local, shared_bytes=max(kernel.metadata.shared, shared_static))


# --sass: "all" disassembles every build; "tensor-core" only those whose tensor-core use is checked (16-bit
# kernels with a dot, TMA configs): the compile check's fast path, a third of the time (spills come from
# cuobjdump -res-usage either way).
SASS_MODES = ("all", "tensor-core")


def _wants_sass(mode: str, row: Row) -> bool:
    return mode == "all" or (row.uses_dot and row.dtype != "float32") or "USE_TMA=True" in row.config


def compile_one(name: str, fn, args: dict, config, arch_name: str, sass: str = "all") -> Row:
    arch = ARCHS[arch_name]
    args = dict(args, **config.kwargs)
    row = Row(kernel=name, arch=arch_name,
              config=" ".join(f"{k}={v}" for k, v in config.kwargs.items()) + f" warps={config.num_warps} stages={config.num_stages}",
              dtype=str(next(v.dtype for v in args.values() if hasattr(v, "dtype"))).replace("torch.", ""),
              head_dim=int(args.get("HEAD_DIM", 0)), uses_dot=False)
    try:
        kernel, res = compile_kernel(fn, args, config.num_warps, config.num_stages, arch_name)
        row.uses_dot = "tt.dot" in kernel.asm["ttir"]
        text = disassemble(kernel) if _wants_sass(sass, row) else None
    except Exception as exc:  # a config that does not compile is a finding, not a crash
        row.ok, row.error = False, describe(exc, 200)
        return row
    for key, value in resources(kernel, res).items():
        setattr(row, key, value)
    row.threads = config.num_warps * 32
    row.blocks_per_sm, row.occupancy = occupancy(row.registers, row.shared_bytes, row.threads, arch)
    if text is not None:
        ops = collections.Counter(_SASS_OP.findall(text))
        row.sass = {op: ops.get(op, 0) for op in SASS_COUNTED}
        row.hot_loop_instructions, mmas = hot_loop(text)
        row.instr_per_mma = round(row.hot_loop_instructions / mmas, 1) if mmas else 0.0
    if row.shared_bytes > arch["smem_per_block"]:
        row.ok, row.error = False, f"shared memory {row.shared_bytes} B > {arch['smem_per_block']} B per block"
    return row


def _builds(kernels, archs, dtypes):
    import torch

    dts = tuple(getattr(torch, d) for d in dtypes)
    for mod_name in kernels:
        mod = importlib.import_module(f"kernels.{mod_name}")
        for arch_name in archs:
            for name, fn, args, cfg in mod.compile_builds(ARCHS[arch_name]["family"], dts):
                yield name, fn, args, cfg, arch_name


def _compile_task(task) -> dict:
    mod_name, index, arch_name, dtypes, sass = task
    for i, (name, fn, args, cfg, arch) in enumerate(_builds((mod_name,), (arch_name,), dtypes)):
        if i == index:
            return asdict(compile_one(name, fn, args, cfg, arch, sass))
    raise IndexError(index)


def inspect_kernels(kernels=KERNEL_MODULES, archs=tuple(ARCHS), dtypes=("float16",), jobs=None,
                    sass: str = "all") -> list[dict]:
    """Compile every (kernel config, arch) pair; one dict per pair, in a stable order.  ``sass``: which
    builds are disassembled (SASS_MODES); the others' ``sass`` counts are empty."""
    if sass not in SASS_MODES:
        raise ValueError(f"sass must be one of {SASS_MODES}, got {sass!r}")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _in_child(kernels, archs, dtypes, jobs, sass)
    tasks = []
    for mod_name in kernels:
        for arch_name in archs:
            n = sum(1 for _ in _builds((mod_name,), (arch_name,), dtypes))
            tasks += [(mod_name, i, arch_name, tuple(dtypes), sass) for i in range(n)]
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        return [_compile_task(t) for t in tasks]
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_compile_task, tasks))


def _in_child(kernels, archs, dtypes, jobs, sass) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "bench.tools.inspect_cli", "--json", "-", "--only", ",".join(kernels),
           "--arch", ",".join(archs), "--dtype", ",".join(dtypes), "--sass", sass] + (["--jobs", str(jobs)] if jobs else [])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the checkout
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"inspect child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def to_table(rows: list[dict]):
    import pandas as pd

    flat = [{**{k: v for k, v in r.items() if k != "sass"}, **r["sass"]} for r in rows]
    return pd.DataFrame(flat)
