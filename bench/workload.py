"""What a workload is: the data a module in ``bench/workloads/`` declares, and how a point runs.

A ``Workload`` holds, in one place, its shapes (CPU/GPU × quick/full), the inputs every
implementation shares, the FLOP / minimum-byte / token counts, the sequential-floor term of a
recurrence, and the small checks ``seqbench run`` makes through the Triton interpreter.
Implementations register with a decorator on a function whose name is the impl's name::

    @lstm_layer.impl(baseline=True)
    def torch_loop(inp):                       # inp: the shared inputs of one shape
        return lambda: reference.lstm(inp.x, None, *inp.w)[0]

The function does any one-off setup and returns a zero-argument callable that runs the
implementation once and returns its output.  The baseline's output is what every other impl's
output is compared with, on every measured point.
"""
from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench.schema import describe

MODES = ("fwd", "fwd+bwd")
REGISTRY: dict[str, "Workload"] = {}

# Largest |impl − baseline| accepted, as a fraction of max |baseline| (per compared tensor), by dtype:
# a few hundred rounding steps of accumulated difference between two correct implementations (TF32 on a
# GPU for float32), far below the O(1) error of a wrong kernel.
TOLERANCE = {torch.float32: 1e-2, torch.float16: 2e-2, torch.bfloat16: 6e-2}


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


@dataclass(frozen=True)
class Shapes:
    """Default shapes: on a CPU (small, for the interpreter and host timers) and on a GPU, quick and full."""
    cpu_quick: tuple
    cpu_full: tuple
    gpu_quick: tuple
    gpu_full: tuple

    def pick(self, quick: bool, gpu: bool) -> list[dict]:
        return [dict(s) for s in getattr(self, f"{'gpu' if gpu else 'cpu'}_{'quick' if quick else 'full'}")]


@dataclass(frozen=True)
class Impl:
    name: str
    setup: Callable                 # (inputs) -> zero-argument callable returning the output
    baseline: bool = False          # the output every other impl is compared with
    triton: bool = False            # runs a Triton kernel: timed on a GPU only
    needs_cuda: bool = False        # a CUDA-only library path (SDPA flash/cudnn, cuDNN)
    textbook: str | None = None     # the line of the textbook's table this impl stands for
    guide: tuple[str, str] | None = None   # (architecture, implementation) in the LSTM-vs-GRU guide table
    group: str | None = None        # impls computing one function: compared with their group's baseline
    note: str = ""
    compiles: bool = False          # compiled at its first call (torch.compile, FlashRNN's nvcc build): its setup
                                    # and first call run under the compile budget
    peer: str = ""                  # the library a user would pick instead of ours ("torch.compile", ...)


@dataclass(frozen=True)
class Check:
    """A kernel against its float64 reference: ``run(device) -> (got, want)``; the error is
    max|got − want| / max(1, max|want|).  Small checks run everywhere (through the interpreter on a CPU);
    ``gpu_only`` ones run at real GPU shapes, ``first`` ones before the others (the GPU job's smoke stage)."""
    name: str
    run: Callable
    tolerance: float = 1e-5
    gpu_only: bool = False
    first: bool = False


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def forward_backward(fn, tensors, dtype) -> torch.Tensor:
    """fn's output and the gradients of all ``tensors`` (cast to ``dtype``, as leaves) from a fixed random
    output gradient, flattened into one float64 vector: one comparison covers forward and backward."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in tensors]
    out = _first(fn(*leaves))
    g = torch.Generator().manual_seed(3)
    out.backward(torch.randn(out.shape, generator=g).to(out.device, out.dtype))
    return torch.cat([out.detach().double().flatten()] + [t.grad.double().flatten() for t in leaves])


@dataclass
class Workload:
    name: str
    description: str
    shape_keys: tuple[str, ...]
    seq_key: str
    shapes: Shapes
    flops: Callable          # (shape, mode) -> float
    min_bytes: Callable      # (shape, dtype, mode) -> float
    tokens: Callable         # (shape) -> int
    inputs: Callable         # (shape, dtype, device, grad) -> SimpleNamespace of shared tensors/modules
    recurrent_params: Callable | None = None   # (shape) -> weights one dependent step multiplies (sequential floor)
    params: Callable | None = None   # (shape) -> the layer's parameter count (the LSTM-vs-GRU guide)
    checks: tuple[Check, ...] = ()
    impls: dict[str, Impl] = field(default_factory=dict)
    # group -> its own counts where a workload holds several functions ({"flops": ..., "min_bytes": ...,
    # "recurrent_params": ...}, any subset): the rows of that group's impls use them
    group_counts: dict[str, dict] = field(default_factory=dict)
    register: bool = True
    module: str = ""          # the module that declared it (an isolated worker imports it from there)

    def __post_init__(self):
        if not self.module:
            self.module = sys._getframe(2).f_globals.get("__name__", "")
        if self.register:
            if self.name in REGISTRY:
                raise ValueError(f"workload {self.name!r} is declared twice")
            REGISTRY[self.name] = self

    def impl(self, name: str | None = None, **flags):
        """Decorator: register ``fn`` as an implementation named ``name`` (default: the function's name)."""
        def deco(fn):
            impl_name = name or fn.__name__
            if impl_name in self.impls:
                raise ValueError(f"{self.name}: implementation {impl_name!r} is registered twice")
            self.impls[impl_name] = Impl(impl_name, fn, **flags)
            return fn
        return deco

    def compiled(self, of: str, name: str | None = None, cudagraphs: bool = True, **flags):
        """Register ``torch.compile`` of implementation ``of`` as ``name`` (default ``<of>_compile``; the same
        textbook row and group unless ``flags`` say otherwise), and on a GPU ``<name>_cudagraphs``, the same under
        mode="reduce-overhead" (CUDA graphs: no launch gaps, the whole story of a per-step recurrence)."""
        base, name = self.impls[of], name or f"{of}_compile"
        flags = {"textbook": base.textbook, "group": base.group, "note": f"torch.compile of {of}"} | flags
        self.impl(name, compiles=True, peer="torch.compile", **flags)(compiled_setup(base.setup))
        if cudagraphs:
            self.impl(f"{name}_cudagraphs", compiles=True, needs_cuda=True, peer="torch.compile",
                      **flags | {"note": flags["note"] + ', mode="reduce-overhead" (CUDA graphs)'})(
                compiled_setup(base.setup, mode="reduce-overhead"))

    @property
    def baseline(self) -> Impl | None:
        return next((i for i in self.impls.values() if i.baseline), None)

    def baseline_for(self, impl: Impl) -> Impl | None:
        """The baseline ``impl`` is compared with: its group's (a workload of several functions, such as
        three attention scores), else the workload's."""
        return next((i for i in self.impls.values() if i.baseline and i.group == impl.group), None)

    def counted(self, impl: Impl) -> "Workload":
        """This workload with ``impl``'s group's own FLOP / byte counts and sequential floor, where declared."""
        over = self.group_counts.get(impl.group)
        return dataclasses.replace(self, register=False, **over) if over else self

    def default_shapes(self, quick: bool, gpu: bool) -> list[dict]:
        return self.shapes.pick(quick, gpu)

    def tolerance(self, dtype: torch.dtype) -> float:
        return TOLERANCE[dtype]


def compile_settings() -> None:
    """What every compiled implementation runs under.  Dynamo's recompile limit raised and made an error: each
    point's shape and mode compiles its own graph, and past the limit Dynamo would silently run eager.  Inductor
    compiles in this process (compile_threads = 1): with its pool of compile workers, 12 and 18 of the same 34
    eager CPU points were unstable in two runs beside the compiled ones, 7 without the pool (4 and 7 in runs with
    no compiled implementation); single runs on a 2-core VM, so a direction, not a measurement."""
    import torch._dynamo.config as dynamo
    import torch._inductor.config as inductor
    dynamo.recompile_limit = max(dynamo.recompile_limit, 1024)
    dynamo.fail_on_recompile_limit_hit = True
    inductor.compile_threads = 1


def compiled_setup(base_setup, mode: str | None = None):
    """An impl's setup whose callable is ``torch.compile``'d (Inductor, static shapes), under compile_settings."""
    def setup(inp):
        compile_settings()
        return torch.compile(base_setup(inp), dynamic=False, mode=mode)
    return setup


def shape_label(w: Workload, s: dict) -> str:
    return " ".join(f"{k}={s[k]}" for k in w.shape_keys)


def randn(*shape, dtype, device, requires_grad=False, scale=1.0):
    t = torch.randn(*shape, device=device, dtype=torch.float32) * scale
    return t.to(dtype).requires_grad_(requires_grad)


def uniform(*shape, bound, dtype, device, requires_grad=False):
    t = (torch.rand(*shape, device=device) * 2 - 1) * bound
    return t.to(dtype).requires_grad_(requires_grad)


def leaves(inputs) -> list[tuple[str, torch.Tensor]]:
    """The shared input tensors that take gradients."""
    return [(k, v) for k, v in vars(inputs).items() if isinstance(v, torch.Tensor) and v.requires_grad]


class Point:
    """One (workload, shape, mode): inputs built once and shared by every impl, a fixed output gradient,
    and the baseline's result, so each impl's output can be compared with it."""

    def __init__(self, workload: Workload, shape: dict, mode: str, dtype: torch.dtype, device: torch.device):
        self.workload, self.shape, self.mode, self.dtype, self.device = workload, shape, mode, dtype, device
        self._inputs = None
        self._grad = None
        self._references = {}       # group -> (baseline name, its tensors) or (name, error text)
        self._callables = {}        # impl name -> its setup's callable (a compiled one compiles once)

    @property
    def inputs(self):
        if self._inputs is None:
            torch.manual_seed(0)
            self._inputs = self.workload.inputs(self.shape, self.dtype, self.device, self.mode == "fwd+bwd")
        return self._inputs

    def callable(self, impl: Impl):
        """``impl``'s setup on these inputs, run once per point: the timing and the accuracy check share it."""
        if impl.name not in self._callables:
            self._callables[impl.name] = impl.setup(self.inputs)
        return self._callables[impl.name]

    def runner(self, impl: Impl):
        """A zero-argument callable running ``impl`` once (and, for fwd+bwd, its backward from a fixed gradient)."""
        fn = self.callable(impl)
        if self.mode == "fwd":
            def run():
                with torch.no_grad():
                    return fn()
            return run
        grad = self.output_grad(_first(fn()))
        inputs = self.inputs

        def run():
            o = _first(fn())
            o.backward(grad)
            for _, t in leaves(inputs):
                t.grad = None
        return run

    def output_grad(self, out: torch.Tensor) -> torch.Tensor:
        if self._grad is None:
            g = torch.Generator().manual_seed(1)
            self._grad = torch.randn(out.shape, generator=g).to(out.device, out.dtype)
        return self._grad

    def evaluate(self, impl: Impl) -> list[torch.Tensor]:
        """The output of one call, then (fwd+bwd) the gradients of the shared inputs, as float64."""
        fn = self.callable(impl)
        if self.mode == "fwd":
            with torch.no_grad():
                return [_first(fn()).detach().double()]
        out = _first(fn())
        out.backward(self.output_grad(out))
        got = [out.detach().double()]
        for _, t in leaves(self.inputs):
            got.append(t.grad.double() if t.grad is not None else None)
            t.grad = None
        return got

    def accuracy(self, impl: Impl) -> dict:
        """The Row fields comparing ``impl`` with the baseline on these inputs."""
        base = self.workload.baseline_for(impl)
        if base is None:
            return {}
        if impl.group not in self._references:
            try:
                self._references[impl.group] = (base.name, self.evaluate(base))
            except Exception as exc:  # an unusable baseline leaves the columns empty, with the reason
                self._references[impl.group] = (base.name, describe(exc, 200))
        name, ref = self._references[impl.group]
        if isinstance(ref, str):
            return {"baseline": f"{name} (failed: {ref})"}
        try:
            got = ref if impl.name == name else self.evaluate(impl)
        except Exception as exc:  # the timing stands; only the comparison is missing, with its reason
            return {"baseline": f"{name} (comparison failed: {describe(exc, 200)})"}
        rtol = self.workload.tolerance(self.dtype)
        worst, err, tol, ok = -1.0, 0.0, 0.0, True
        for a, b in zip(got, ref):
            if a is None or b is None:
                continue
            e = (a - b).abs().max().item() if a.numel() else 0.0
            t = rtol * max(b.abs().max().item() if b.numel() else 0.0, 1e-6)
            ok = ok and e <= t          # NaN fails
            ratio = e / t if e == e else float("inf")
            if ratio > worst:
                worst, err, tol = ratio, e, t
        return {"baseline": name, "max_abs_err": err, "tolerance": tol, "accurate": ok}


def namespace(**kw) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kw)
