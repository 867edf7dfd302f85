"""kernels.lstm_persistent against the textbook LSTM in float64 (2x rule per dtype) and nn.LSTM:
one program per head (a single launch over all steps, also in the interpreter) and a head split
over programs (one launch per step here; on a GPU one launch with a grid barrier)."""
import os

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kernels.lstm import FusedLSTM
from kernels.lstm_persistent import grid_barrier, lstm_persistent, plan
from reference import lstm_persistent as ref
from tests.helpers import DEVICE, DTYPES, assert_module_matches, check_fn, double_backward, make, odd_bias, strided


def _persistent(block_h=None, heads=1):
    def run(x, h, c, *w):
        out, (hn, cn) = lstm_persistent(x, None if h is None else (h, c), *w, heads=heads, _block_h=block_h)
        return out, hn, cn
    return run


def _ref(heads=1):
    def run(x, h, c, *w):
        out, (hn, cn) = ref.lstm_persistent(x, None if h is None else (h, c), *w, heads=heads)
        return out, hn, cn
    return run


def _seq(T, B, I, dtype, seed=2):
    return (torch.rand(T, B, I, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(DEVICE, dtype)


def test_plans():
    one = plan(768, 12, 16, torch.float16, sms=132)
    assert one.TILES == 1 and one.single_launch and not one.barrier and one.HOIST_W
    assert one.h_on_chip                    # #26: h[t−1] stays in registers where the head is one program
    split = plan(768, 1, 16, torch.float16, sms=132)
    assert split.TILES == 48 and split.single_launch and split.barrier and not split.h_on_chip
    assert plan(24, 1, 3, torch.float32, sms=0).h_on_chip and not plan(24, 1, 3, torch.float32, 0, 16).h_on_chip
    too_big = plan(1024, 1, 256, torch.float16, sms=132)      # 64 × 8 programs cannot all be resident
    assert not too_big.single_launch and not too_big.barrier
    interp = plan(768, 1, 16, torch.float16, sms=0)
    assert not interp.single_launch                           # the interpreter cannot wait on programs
    assert plan(1024, 4, 16, torch.float16, sms=132).TILES == 1   # a 256-wide head is one program
    assert plan(1024, 4, 16, torch.float16, sms=132, backward=True).TILES == 2
    # #26: the backward keeps W_hh's slice on chip where the head is one program and its four gate blocks fit
    assert plan(768, 12, 16, torch.float16, sms=132, backward=True).HOIST_W
    assert not plan(768, 1, 16, torch.float16, sms=132, backward=True).HOIST_W     # a split head streams it
    # test_matches_textbook's 50 units, one program: 16-bit on chip, fp32 (4 × 64² × 4 B, over 32 KiB) streamed
    assert plan(50, 1, 3, torch.float16, sms=0, backward=True).HOIST_W
    assert not plan(50, 1, 3, torch.float32, sms=0, backward=True).HOIST_W


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# a split head runs one launch per step in the interpreter (two per step with the backward): 9 steps, not 37
@pytest.mark.parametrize("T, block_h", [(1, None), (37, None), (1, 16), (9, 16)],
                         ids=["1-one-program", "37-one-program", "1-split-head", "9-split-head"])
def test_matches_textbook(T, block_h, dtype):
    x, h, c, *w = make(3, 24, 50, dtype)
    check_fn(_persistent(block_h), _ref(), (_seq(T, 3, 24, dtype), h, c, *w), 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_multi_head_block_diagonal(dtype):
    g = torch.Generator().manual_seed(5)
    heads, dh, I, B, T = 3, 20, 16, 5, 9
    r = lambda *s: ((torch.rand(*s, generator=g) * 2 - 1) * 0.4).to(DEVICE, dtype)  # noqa: E731
    args = (_seq(T, B, I, dtype), r(B, heads * dh), r(B, heads * dh), r(4 * heads * dh, I), r(heads, 4 * dh, dh),
            r(4 * heads * dh), r(4 * heads * dh))
    check_fn(_persistent(heads=heads), _ref(heads), args, 3)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False)])
def test_optional_bias_and_state(bias, state):
    x, h, c, *w = make(2, 16, 20, torch.float32, bias=bias, state=state)
    for block_h in (None, 16):
        check_fn(_persistent(block_h), _ref(), (_seq(6, 2, 16, torch.float32), h, c, *w), 3)


@pytest.mark.parametrize("grad", [False, True])
def test_does_not_modify_inputs(grad):
    x, h, c, *w = make(2, 8, 12, torch.float32)
    args = [t.requires_grad_(grad) for t in (_seq(4, 2, 8, torch.float32), h, c, *w)]
    before = [t.detach().clone() for t in args]
    out, (hn, cn) = lstm_persistent(args[0], (args[1], args[2]), *args[3:])
    if grad:
        dcn = torch.ones_like(cn)
        saved = dcn.clone()
        torch.autograd.backward([out.sum(), cn], [None, dcn])
        assert torch.equal(dcn, saved)
    for a, b in zip(before, args):
        assert torch.equal(a, b.detach())


def test_fused_lstm_persistent_equals_nn_lstm():
    torch.manual_seed(0)
    m = nn.LSTM(12, 40, num_layers=2, bidirectional=True, batch_first=True, device=DEVICE)
    f = FusedLSTM.from_torch(m, kernel="persistent")
    assert "kernel='persistent'" in repr(f)
    assert_module_matches(f, m, torch.randn(3, 6, 12, device=DEVICE))


@given(B=st.integers(1, 20), I=st.integers(1, 24), H=st.integers(1, 40), T=st.integers(1, 5),
       split=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_shapes(B, I, H, T, split, dtype, seed):
    x, h, c, *w = make(B, I, H, dtype, seed=seed)
    check_fn(_persistent(16 if split else None), _ref(), (_seq(T, B, I, dtype, seed), h, c, *w), 3)


def test_bad_input():
    x, h, c, *w = make(2, 8, 12, torch.float32)
    xs = _seq(3, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="heads must be a positive int"):
        lstm_persistent(xs, None, *w, heads=0)
    with pytest.raises(ValueError, match=r"w_hh must have shape \(3, 4\*head_size, head_size\)"):
        lstm_persistent(xs, None, w[0], torch.randn(2, 16, 4, device=DEVICE), heads=3)
    with pytest.raises(ValueError, match="w_hh must have rank 3"):
        lstm_persistent(xs, None, *w, heads=3)
    with pytest.raises(ValueError, match="x must have rank 3"):
        lstm_persistent(xs[0], None, *w)
    with pytest.raises(ValueError, match="h must have shape"):
        lstm_persistent(xs, (h[:1], c), *w)
    with pytest.raises(TypeError, match="w_ih has dtype"):
        lstm_persistent(xs, None, w[0].double().half(), *w[1:])
    with pytest.raises(ValueError, match="kernel must be one of"):
        FusedLSTM(4, 4, kernel="fast")


@triton.jit
def _barrier_kernel(BAR, target, MAX_SPIN: tl.constexpr):
    grid_barrier(BAR, target, MAX_SPIN)


def test_grid_barrier_passes_and_times_out():
    """The barrier's logic in the interpreter (one program): it passes once the count is reached, and when
    it never is, gives up after MAX_SPIN polls with the stuck flag raised instead of hanging."""
    bar = torch.zeros(2, dtype=torch.int32, device=DEVICE)
    _barrier_kernel[(1,)](bar, 1, MAX_SPIN=8)
    assert bar.tolist() == [1, 0]
    _barrier_kernel[(1,)](bar, 3, MAX_SPIN=8)          # a second program that never arrives
    assert bar.tolist() == [2, 1]


@pytest.mark.parametrize("layout", ["strided", "stride0"])
@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
def test_non_contiguous_bias(layout, block_h):
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(3, 5, 20, torch.float32)
    check_fn(_persistent(block_h), _ref(),
             (_seq(4, 3, 5, torch.float32), h, c, w_ih, w_hh, odd_bias(b_ih, layout), odd_bias(b_hh, layout)), 3)


def testdouble_backward_raises():
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(lambda xs, *a: lstm_persistent(xs, (a[0], a[1]), *a[2:])[0], _seq(3, 2, 5, torch.float32),
                         h, c, *w)


def test_zero_steps_is_a_value_error():
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="at least one time step"):
        lstm_persistent(torch.randn(0, 2, 5, device=DEVICE), None, *w)


@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
def test_h_n_does_not_alias_out(block_h):
    x, h, c, *w = make(2, 5, 20, torch.float32)
    with torch.no_grad():
        out, (hn, cn) = lstm_persistent(_seq(3, 2, 5, torch.float32), (h, c), *w, _block_h=block_h)
        want = out[-1].clone()
        out.zero_()
    assert torch.equal(hn, want)


@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
def test_every_argument_strided(block_h):
    x, h, c, *w = make(3, 5, 20, torch.float32)
    xs = _seq(4, 5, 3, torch.float32).transpose(1, 2)          # (T, B, I) view of (T, I, B) storage
    args = [xs] + [strided(t) for t in (h, c, *w)]
    assert not any(t.is_contiguous() for t in args)
    check_fn(_persistent(block_h), _ref(), args, 3)


class _Kernel:
    """Stands in for a jit kernel: records launches, and refuses a cooperative one as the driver does when
    the grid cannot be co-resident."""
    def __init__(self, refuse):
        self.calls, self.refuse = [], refuse

    def __getitem__(self, grid):
        def launch(**kw):
            if kw.get("launch_cooperative_grid") and self.refuse:
                raise RuntimeError("Triton Error [CUDA]: too many blocks in cooperative launch")
            self.calls.append(kw)
        return launch


@pytest.mark.parametrize("refuse", [False, True])
def test_barrier_grid_is_cooperative_and_falls_back(refuse):
    from kernels.lstm_persistent import _run
    p = plan(768, 1, 16, torch.float16, sms=132)
    assert p.barrier and p.launch()["launch_cooperative_grid"]

    def launches(q):
        return [dict(t_lo=0, t_hi=5)] if q.single_launch else [dict(t_lo=t, t_hi=t + 1) for t in range(5)]
    k = _Kernel(refuse)
    _run(k, {}, p, torch.zeros(2, dtype=torch.int32), launches)
    if refuse:   # one launch per step, barrier compiled out
        assert [c["t_lo"] for c in k.calls] == [0, 1, 2, 3, 4]
        assert not any(c["BARRIER"] or "launch_cooperative_grid" in c for c in k.calls)
    else:
        assert len(k.calls) == 1 and k.calls[0]["BARRIER"] and k.calls[0]["num_stages"] == 1


def test_barrier_flag_is_read_later_without_a_sync(monkeypatch):
    """The grid barrier's timeout flag is not read (.item(), a host sync) inside the call: the call records it,
    a later call or check_barriers() reads it and raises; nothing is recorded during CUDA-graph capture."""
    from kernels import lstm_persistent as lp
    flags = lp.BarrierFlags()
    monkeypatch.setattr(lp, "BARRIER_FLAGS", flags)
    p = plan(768, 1, 16, torch.float16, sms=132)
    stuck = torch.tensor([3, 1], dtype=torch.int32)

    def launches(q):
        return [dict(t_lo=0, t_hi=5)]
    lp._run(_Kernel(False), {}, p, stuck, launches)            # returns: the flag is only recorded
    assert len(flags.pending) == 1
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        lp.check_barriers()
    assert not flags.pending
    lp._run(_Kernel(False), {}, p, stuck, launches)
    with pytest.raises(RuntimeError, match="grid barrier timed out"):     # or the next call, before it launches
        lp._run(_Kernel(False), {}, p, torch.zeros(2, dtype=torch.int32), launches)
    monkeypatch.setattr(lp, "capturing", lambda device: True)
    lp._run(_Kernel(False), {}, p, stuck, launches)
    assert not flags.pending


class _Event:
    """A CUDA event stand-in that is done after ``ready`` queries."""
    def __init__(self, ready):
        self.ready, self.waited = ready, False

    def query(self):
        self.ready -= 1
        return self.ready < 0

    def synchronize(self):
        self.waited = True


def test_barrier_flags_wait_only_when_asked():
    from kernels.lstm_persistent import BarrierFlags
    flags = BarrierFlags()
    late = _Event(ready=5)
    flags.pending = [(late, torch.tensor([1]))]
    flags.check(block=False)                  # not done yet: kept, no wait, no error
    assert flags.pending and not late.waited
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        flags.check(block=True)
    assert late.waited and not flags.pending
    flags.pending = [(_Event(ready=0), torch.tensor([0]))]
    flags.check(block=False)
    assert not flags.pending


@pytest.mark.parametrize("message, refused", [
    ("Triton Error [CUDA]: too many blocks in cooperative launch", True),       # 720
    ("Triton Error [CUDA]: operation not supported", True),                      # 801 (vGPU, MIG)
    ("Triton Error [CUDA]: operation not permitted", True),                      # 800
    ("Triton Error [CUDA]: an illegal memory access was encountered", False),
    ("out of resource: shared memory, Required: 300000, Hardware limit: 232448", False),
])
def test_cooperative_refusals_are_known_by_their_error_code(message, refused):
    from kernels.lstm_persistent import cooperative_refused
    assert cooperative_refused(RuntimeError(message)) is refused


# ---------------------------------------------------- 64-bit offsets at shipped shapes (issue 23)

_OFFSETS = r'''
import json, re, sys, torch, triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from bench.tools import kernel_inspect as ki
from kernels import lstm_persistent as lp
B, T, HID, dtype = 512, 2048, 1024, torch.float16           # model_lstm's largest GPU shape
t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)
f32 = lambda *s: torch.empty(*s, device="meta", dtype=torch.float32)
bar = torch.empty(2, device="meta", dtype=torch.int32)
xw, hs, cs, gates, w = t(T, B, 4 * HID), t(T + 1, B, HID), t(T, B, HID), t(T, B, 4 * HID), t(1, 4 * HID, HID)
out = {"max_offset": max(sum((n - 1) * s for n, s in zip(x.shape, x.stride())) for x in (xw, hs, cs, gates))}
pf = lp.plan(HID, 1, B, dtype, 132, hopper=True)
pb = lp.plan(HID, 1, B, dtype, 132, backward=True, hopper=True)
builds = {"fwd": (lp._lstm_persist_fwd, pf, lp.fwd_args(xw, hs, f32(B, HID), w, cs, gates, bar, HID, HID, pf)),
          "bwd": (lp._lstm_persist_bwd, pb, lp.bwd_args(t(T, B, HID), gates, gates, cs, t(B, HID), w, f32(B, HID),
                                                      t(B, HID), f32(B, HID), bar, HID, HID, pb))}
for name, (fn, p, args) in builds.items():
    args.update(t_lo=0, t_hi=T, BARRIER=p.barrier, **({"FINAL": True} if name == "bwd" else {}))
    sig, ce, attrs = ki.specialize(fn, args)
    k = triton.compile(ASTSource(fn, sig, ce, attrs), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=p.num_warps, num_stages=p.num_stages))
    found = re.findall(r"tt\.addptr %(?:XW|HS|CS|GATES|DOUT|DG), [^:]*: !tt\.ptr<[a-z0-9]+>, (i\d+)", k.asm["ttir"])
    out[name] = found
print(json.dumps(out))
'''


def test_time_offsets_are_64_bit_at_the_largest_shipped_shape():
    """model_lstm's full GPU sweep reaches B 512, T 2048, d 1024: (T, B, 4·HID) is past 2³¹ elements, so the
    persistent kernels' per-step offsets (t · stride) must be 64-bit.  Compiled for sm_90a from meta tensors at
    that shape (no GPU, in a child process without the interpreter): every per-step base offset of the
    time-indexed tensors is i64."""
    import json
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _OFFSETS], capture_output=True, text=True, timeout=600, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["max_offset"] >= 2**31
    for name in ("fwd", "bwd"):
        assert got[name] and set(got[name]) == {"i64"}, (name, got[name])


def test_64_bit_offsets_only_where_a_tensor_needs_them():
    """The launcher's arithmetic: INDEX_64 at model_lstm's largest shape, 32-bit offsets (fewer registers)
    below 2³¹ elements."""
    from kernels._common import wide_offsets
    meta = lambda *s: torch.empty(*s, device="meta", dtype=torch.float16)  # noqa: E731
    assert wide_offsets(meta(2048, 512, 4096)) and wide_offsets(meta(1025, 512, 4096))
    assert not wide_offsets(meta(1024, 512, 4096))           # 2³¹ elements: the last offset, 2³¹ − 1, fits
    assert not wide_offsets(meta(2048, 16, 4096), None) and not wide_offsets(meta(0, 512, 4096))
    assert wide_offsets(meta(4096, 512, 4096)[::2])          # a strided view reaches as far as its stride says
