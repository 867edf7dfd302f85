"""The peers in every row, what a user would pick instead of our kernels: torch.compile of each workload's
PyTorch reference, FlexAttention, flash-linear-attention's HGRN kernels and FlashRNN's LSTM.  Each is checked
against its workload's baseline at a tiny shape on the CPU (Inductor's C++ backend; fla's and FlashRNN's
Triton kernels through the interpreter), forward and backward, by the same accuracy rule as every measured point;
the compile budget stops a compile that runs past it, and a sweep then skips that implementation's longer
lengths."""
import csv
import dataclasses

import pytest
import torch

from bench import peers
from bench.measure import timing
from bench.sweep import point as bpoint
from bench.sweep import run as brun
from bench.workload import Point
from bench.workloads import WORKLOADS

PEERS = [(w.name, i.name) for w in WORKLOADS.values() for i in w.impls.values() if i.peer and not i.needs_cuda]


SMALL = {"T": 4, "N": 16, "d": 32, "H": 16, "B": 2}


def _tiny(w):
    """The workload's first CPU quick shape, each dimension capped by SMALL (compile time grows with T)."""
    return {k: min(v, SMALL.get(k, v)) for k, v in w.default_shapes(quick=True, gpu=False)[0].items()}


def test_every_textbook_row_has_a_peer():
    """torch.compile stands in every row of the table whose PyTorch side is written in torch ops (the optimised
    LSTM's is cuDNN already); FlexAttention in the Transformer's."""
    from bench.report.tables import ROWS, stand_ins
    rows = stand_ins(WORKLOADS)
    for label in ROWS:
        peers = {WORKLOADS[w].impls[i].peer for w, i in rows[label]} - {""}
        assert ("torch.compile" in peers) == (label != "LSTM (optimized)"), label
        assert ("FlashRNN" in peers) == label.startswith("LSTM"), label
    assert "FlexAttention" in {WORKLOADS[w].impls[i].peer for w, i in rows["Transformer"]}
    assert {"torch.compile", "FlexAttention"} <= {i.peer for i in WORKLOADS["attention"].impls.values()}


@pytest.mark.parametrize("workload, impl", PEERS)
def test_peer_matches_its_baseline(workload, impl):
    """The compiled (or Flex) implementation's output and its input gradients against the baseline's on the
    same inputs, within the dtype's tolerance (training mode compares both).  FlexAttention has no backward
    on a CPU: there its training point is an 'unsupported' row naming that, and its forward is compared; so is
    fla's chunked kernel's, whose backward the interpreter cannot run."""
    w = WORKLOADS[workload]
    cpu = torch.device("cpu")
    module = {"flash-linear-attention": "fla", "FlashRNN": "flashrnn"}.get(w.impls[impl].peer)
    if module:
        pytest.importorskip(module, reason=f"{w.impls[impl].peer} is not installed ({peers.INSTALL})")
    if impl.endswith("_fla_chunk"):
        mode = "fwd"        # chunk_hgrn's backward kernel does not run in Triton's interpreter (a GPU checks it)
    elif w.impls[impl].peer == "FlexAttention":
        row = bpoint.measure_point(w, w.impls[impl], _tiny(w), "fwd+bwd", torch.float32, cpu, None)
        assert row.status == "unsupported" and "does not support backward on CPU" in row.reason, row
        mode = "fwd"
    else:
        mode = "fwd+bwd"
    got = Point(w, _tiny(w), mode, torch.float32, cpu).accuracy(w.impls[impl])
    assert got.get("accurate") is True, got


def test_flashrnn_says_what_it_cannot_run(monkeypatch):
    """FlashRNN's fused backends, where they cannot run, raise NotImplementedError (an 'unsupported' row with
    the reason) before any kernel: triton_fused past the head size whose R fits on chip, or not a power of 2;
    cuda_fused where nvcc or ninja is missing."""
    pytest.importorskip("flashrnn")
    lstm = peers.flashrnn_lstm("triton_fused")
    for DH in (peers.TRITON_FUSED_MAX_DH * 2, 48):
        x, w_ih = torch.zeros(2, 1, DH), torch.zeros(4 * DH, DH)
        with pytest.raises(NotImplementedError, match=f"here DH={DH}"):
            lstm(x, w_ih, torch.zeros(1, 4 * DH, DH), torch.zeros(4 * DH), torch.zeros(4 * DH))
    monkeypatch.setattr(peers, "_found", lambda tool: tool != "nvcc")
    with pytest.raises(NotImplementedError, match="nvcc not found here"):
        peers.flashrnn_lstm("cuda_fused")


def test_flex_attention_masks_like_the_reference():
    """reference.attention.flex with causal and a key mask (one row keeping a single key) against the naive
    formula in float64.  (N = 32: torch 2.13's compiled CPU FlexAttention returns NaN at N = 24, D = 16, and is
    right at 16, 32, 48, 64, 100 and 130; every measured point's accuracy check would show such a result.)"""
    from reference.attention import flex, naive_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 32, 16, generator=g) for _ in range(3))
    key_mask = torch.arange(32)[None, :] < torch.tensor([[32], [1]])
    for causal, mask in ((True, None), (False, key_mask), (True, key_mask)):
        got = flex(q, k, v, causal=causal, key_mask=mask)
        want = naive_attention(q.double(), k.double(), v.double(), causal=causal, key_mask=mask)
        assert (got.double() - want).abs().max() < 1e-4, (causal, mask is not None)


def test_budget_stops_a_long_call_and_leaves_no_alarm():
    import time
    with pytest.raises(timing.BudgetExceeded, match="ran past 0.2 s"):
        with timing.budget(0.2):
            time.sleep(5)
    with timing.budget(5):
        time.sleep(0.3)          # within budget: nothing raised, and the alarm is off afterwards
    time.sleep(0.2)


def test_budget_survives_a_swallowed_alarm():
    """An alarm that lands where Python swallows exceptions (a weakref callback during a compile's garbage
    collection, seen in a quick run) is followed by another a second later, which stops the block."""
    import time
    t0 = time.time()
    with pytest.raises(timing.BudgetExceeded):
        with timing.budget(0.2):
            try:
                time.sleep(5)
            except timing.BudgetExceeded:
                pass                     # what the weakref callback's caller does with it
            time.sleep(5)
    assert time.time() - t0 < 2.5
    time.sleep(1.2)                      # and no alarm is left behind


def test_compile_budget_is_a_row_and_longer_lengths_are_skipped(tmp_path):
    """A budget too small for any compile: the first length is a timeout row naming the budget, the longer
    ones skipped with the same reason, the eager baseline measured at every length; then a real budget
    compiles and measures (an interrupted compile leaves torch.compile usable)."""
    w = WORKLOADS["rnn_layer"]
    brun.sweep(str(tmp_path / "tiny"), [w], torch.float32, True, seq_lens=[4, 8, 16], batch=2, modes=("fwd",),
               progress=False, device="cpu", impls=["torch_loop", "torch_loop_compile"], checks=False,
               compile_budget_s=0.01)
    rows = {(r["impl"], int(r["seq_len"])): r for r in csv.DictReader(open(tmp_path / "tiny" / "results.csv"))}
    first = rows[("torch_loop_compile", 4)]
    assert first["status"] == "timeout" and first["reason"].startswith(bpoint.BUDGET_REASON), first
    for t in (8, 16):
        r = rows[("torch_loop_compile", t)]
        assert r["status"] == "skipped" and "compile budget" in r["reason"] and "at T=4" in r["reason"], r
        assert rows[("torch_loop", t)]["status"] in ("ok", "unstable")
    brun.sweep(str(tmp_path / "real"), [w], torch.float32, True, seq_lens=[4], batch=2, modes=("fwd",),
               progress=False, device="cpu", impls=["torch_loop", "torch_loop_compile"], checks=False)
    rows = {r["impl"]: r for r in csv.DictReader(open(tmp_path / "real" / "results.csv"))}
    r = rows["torch_loop_compile"]
    assert r["status"] in ("ok", "unstable") and r["accurate"] == "True" and float(r["compile_s"]) > 0, r
    assert float(rows["torch_loop"]["compile_s"]) < float(r["compile_s"])


def test_a_missing_peer_is_a_skipped_row_naming_the_install(monkeypatch):
    """Without flash-linear-attention its rows are skipped, with the command that installs it (on a GPU; a
    CPU skips every Triton kernel's timing before it looks)."""
    import builtins
    real = builtins.__import__

    def no_fla(name, *a, **k):
        if name.startswith("fla"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_fla)
    monkeypatch.setattr("importlib.import_module", lambda name: no_fla(name))
    with pytest.raises(peers.PeerMissing, match=r'pip install -e "\.\[peers\]"'):
        peers.fla_hgrn("chunk")
    w = WORKLOADS["model_mingru"]
    impl = dataclasses.replace(w.impls["mingru_fla_chunk"], triton=False)     # as on a GPU: the setup runs
    row = bpoint.measure_point(w, impl, _tiny(w), "fwd", torch.float32, torch.device("cpu"), None)
    assert row.status == "skipped" and peers.INSTALL in row.reason, row


def test_impl_tags_select_the_peers():
    from bench import cli
    pick = lambda *tags: set(cli._chosen_impls(type("A", (), {"impl": list(tags)})(), [WORKLOADS["attention"]]))  # noqa: E731
    assert pick("peers") == {"naive_compile", "naive_compile_cudagraphs", "flex_attention"}
    assert pick("eager") == {"naive", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn"}
