"""Every shipped kernel configuration (the 16-bit tables and the fp32 ones) compiles for sm_80 and
sm_90a on this CPU, fits shared memory, keeps everything in registers, and uses the tensor cores
(HGMMA on sm_90a) where a 16-bit kernel has a dot.  bf16 shares the fp16 tables and code path."""
import pytest
import torch
import triton.language as tl
from triton.runtime.jit import JITFunction

from bench.tools import kernel_inspect as ins



@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Every shipped config compiled, once per test run: under xdist the first worker to get here compiles (minutes)
    and leaves the rows in the run's shared temporary folder; another worker waits for them instead of compiling
    them again (xdist's pattern for a fixture run once)."""
    import json
    import os
    import time

    def compile_all():
        # SASS only where a test reads it (tensor cores, TMA); spills come from cuobjdump -res-usage
        return ins.inspect_kernels(kernels=ins.KERNEL_MODULES, archs=("sm_80", "sm_90a"), dtypes=("float16", "float32"),
                                   sass="tensor-core")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return compile_all()
    shared = tmp_path_factory.getbasetemp().parent / "inspect-rows.json"
    try:
        os.close(os.open(f"{shared}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:                      # another worker compiles them
        deadline = time.time() + 1800
        while not shared.exists():
            if time.time() > deadline:
                raise TimeoutError(f"no {shared} after 30 minutes") from None
            time.sleep(1)
        found = json.loads(shared.read_text())
        if isinstance(found, dict):
            raise RuntimeError(f"the worker that compiled failed: {found['error']}")
        return found
    try:
        found = compile_all()
    except Exception as exc:
        found = {"error": repr(exc)}
        raise
    finally:
        shared.with_suffix(".tmp").write_text(json.dumps(found))
        os.replace(shared.with_suffix(".tmp"), shared)
    return found


def _label(r):
    return f"{r['kernel']} {r['arch']} {r['dtype']} D={r['head_dim']} {r['config']}"


def test_every_shipped_config_is_compiled(rows):
    from kernels.attention import CONFIGS, FP32_CONFIGS, TMA_CONFIGS
    expected = {("attention." + k, arch, "float16", bd,
                 len(cfgs) + (len(TMA_CONFIGS[bd]) if (k, arch) == ("fwd", "sm_90a") else 0))
                for k, fams in CONFIGS.items() for arch, fam in (("sm_80", "sm80"), ("sm_90a", "sm90"))
                for bd, cfgs in fams[fam].items()}
    expected |= {("attention." + k, arch, "float32", bd, len(cfgs))
                 for k, buckets in FP32_CONFIGS.items() for arch in ("sm_80", "sm_90a") for bd, cfgs in buckets.items()}
    seen = {}
    for r in rows:
        if r["kernel"].startswith("attention.") and r["kernel"] != "attention.delta":
            key = (r["kernel"], r["arch"], r["dtype"], r["head_dim"])
            seen[key] = seen.get(key, 0) + 1
    assert {(*key, n) for key, n in seen.items()} == expected
    assert sum(r["kernel"] == "attention.delta" for r in rows) == 2 * 2 * 5


def test_every_step_config_is_compiled(rows):
    from kernels._rnn import step_configs
    for kernel in ("lstm.cell", "lstm.layer_step", "gru.cell", "gru.layer_step"):
        for arch in ("sm_80", "sm_90a"):
            for dtype in ("float16", "float32"):
                n = sum(r["kernel"] == kernel and r["arch"] == arch and r["dtype"] == dtype for r in rows)
                assert n == len(step_configs(getattr(torch, dtype)))
    for kernel in ("lstm.step_bwd", "gru.step_bwd"):
        assert sum(r["kernel"] == kernel for r in rows) == 2 * 2


def test_all_compile_and_fit(rows):
    bad = [f"{_label(r)}: {r['error']}" for r in rows if not r["ok"]]
    assert not bad, "\n".join(bad)


def test_no_register_spills(rows):
    spilled = [f"{_label(r)}: {r['spill_bytes']} B, LDL {r['sass'].get('LDL')} STL {r['sass'].get('STL')}"
               for r in rows if r["spill_bytes"] or r["sass"].get("LDL") or r["sass"].get("STL")]
    assert not spilled, "\n".join(spilled)


# Each kernel family declares which of its kernels must use Hopper's wgmma (``WGMMA`` in its module).
WGMMA_KERNELS = ins.wgmma_kernels()
WGMMA_EXCEPT = ins.wgmma_exceptions()     # declared with the reason; they still need tensor cores (HMMA)


def test_tensor_cores_where_there_is_a_dot(rows):
    with_dot = {r["kernel"] for r in rows if r["uses_dot"]}
    assert {"attention.fwd", "attention.dkdv", "attention.dq", "lstm.cell", "lstm.layer_step", "gru.cell",
            "gru.layer_step"} <= with_dot
    assert not with_dot & {"attention.delta", "lstm.step_bwd", "gru.step_bwd"}
    for r in rows:
        if not r["uses_dot"] or r["dtype"] != "float16":  # fp32 dots are exact IEEE: CUDA cores by design
            continue
        if r["arch"] == "sm_80":
            assert r["sass"]["HMMA"] > 0, f"{_label(r)} has no HMMA"
        elif r["kernel"].startswith(WGMMA_KERNELS) and (r["kernel"], r["head_dim"]) not in WGMMA_EXCEPT:
            assert r["sass"]["HGMMA"] > 0, f"{_label(r)} has no HGMMA"
        else:
            assert r["sass"]["HGMMA"] + r["sass"]["HMMA"] > 0, f"{_label(r)} uses no tensor cores"


def test_persistent_layouts_are_compiled(rows):
    from kernels.lstm_persistent import INSPECTED_LAYOUTS, PACKED_LAYOUTS
    labels = [label for label, *_ in INSPECTED_LAYOUTS] + [f"packed_{label}" for label in PACKED_LAYOUTS]
    for label in labels:
        for part in ("fwd", "bwd"):
            assert sum(r["kernel"] == f"lstm_persistent.{part}.{label}" for r in rows) == 2 * 2  # archs × dtypes
    barrier = {r["kernel"] for r in rows if "BARRIER=True" in r["config"]}
    assert "lstm_persistent.fwd.h1024" in barrier and "lstm_persistent.fwd.heads12x64" not in barrier


def test_occupancy_is_positive(rows):
    assert all(r["blocks_per_sm"] >= 1 for r in rows)


def _kernel(X, CNT, n, m, one, f, absent, C: tl.constexpr):
    pass


def test_specialize_follows_triton_rules():
    k = JITFunction(_kernel)  # not triton.jit: that yields the interpreter's stand-in under TRITON_INTERPRET
    sig, consts, attrs = ins.specialize(k, dict(X=torch.empty(4, device="meta", dtype=torch.bfloat16),
                                                CNT=torch.empty(1, device="meta", dtype=torch.int32), n=48, m=7,
                                                one=1, f=0.5, absent=None, C=3))
    assert sig == {"X": "*bf16", "CNT": "*i32", "n": "i32", "m": "i32", "one": "constexpr", "f": "fp32", "absent": "constexpr",
                   "C": "constexpr"}
    assert consts == {"one": 1, "absent": None, "C": 3}
    assert attrs == {(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]], (2,): [["tt.divisibility", 16]]}


@pytest.mark.parametrize("regs, shared, threads, arch, blocks, occ", [
    # 128 regs x 256 threads = 32768 regs per block -> 2 blocks; 16 warps of 64 resident.
    (128, 0, 256, "sm_90a", 2, 0.25),
    # 255 regs round to 256 per thread -> 65536 / (256*32*4) = 2 blocks of 4 warps.
    (255, 0, 128, "sm_90a", 2, 0.125),
    # shared memory bound: 163840 + 1024 reserved fits once in 233472.
    (64, 163840, 128, "sm_90a", 1, 0.0625),
    # 100 KB does not fit twice in sm_80's 164 KB.
    (32, 102400, 128, "sm_80", 1, 0.0625),
    # thread bound: 32 regs, 1024 threads -> 2 blocks, full occupancy.
    (32, 0, 1024, "sm_80", 2, 1.0),
])
def test_occupancy_hand_computed(regs, shared, threads, arch, blocks, occ):
    assert ins.occupancy(regs, shared, threads, ins.ARCHS[arch]) == (blocks, occ)


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   HGMMA.64x128x16.F32 R24, gdesc[UR12], RZ, !UPT ;
        /*0020*/                   FFMA R2, R3, R4, R5 ;
        /*0030*/                   HGMMA.64x128x16.F32 R24, gdesc[UR12], R24 ;
        /*0040*/                   MUFU.EX2 R6, R7 ;
        /*0050*/              @!P0 BRA 0x10 ;
        /*0060*/                   HMMA.16816.F32 R8, R10, R12, R8 ;
        /*0070*/                   FMUL R2, R3, R4 ;
        /*0080*/                   HMMA.16816.F32 R8, R10, R12, R8 ;
        /*0090*/                   HMMA.16816.F32 R8, R10, R12, R8 ;
        /*00a0*/               @P1 BRA 0x60 ;
        /*00b0*/                   EXIT ;
"""


def test_hot_loop_is_the_loop_with_the_most_mma():
    """Loop [0x60, 0xa0] holds three MMAs in five instructions; the first loop only two."""
    assert ins.hot_loop(SASS) == (5, 3)
    assert ins.hot_loop(SASS.replace("@P1 BRA 0x60", "@P1 BRA 0xb0")) == (5, 2)   # a forward branch is no loop


def test_instructions_per_mma_are_reported(rows):
    fwd = [r for r in rows if r["kernel"] == "attention.fwd" and r["arch"] == "sm_90a" and r["dtype"] == "float16"]
    assert fwd and all(r["instr_per_mma"] > 0 and r["hot_loop_instructions"] > 0 for r in fwd)


def test_tma_configs_use_tma(rows):
    """The tensor-descriptor forward variants load through TMA (UTMALDG) and keep wgmma."""
    tma = [r for r in rows if "USE_TMA=True" in r["config"]]
    assert tma and all(r["kernel"] == "attention.fwd" and r["arch"] == "sm_90a" for r in tma)
    for r in tma:
        assert r["sass"]["UTMALDG"] > 0 and (r["dtype"] == "float32" or r["sass"]["HGMMA"] > 0), _label(r)



STUB_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   SYNCS.PHASECHK.TRANS64 P0, [UR4], R3 ;
        /*0030*/              @!P0 BRA 0x90 ;
        /*0040*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0050*/                   STG.E.64 desc[UR4][R6.64], R8 ;
        /*0060*/                   LDG.E.U16 R9, desc[UR4][R2.64] ;
        /*0070*/               @P1 BRA 0x10 ;
        /*0080*/                   EXIT ;
        /*0090*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3 ;
        /*00a0*/              @!P0 BRA 0x90 ;
        /*00b0*/                   BRA 0x40 ;
"""


def test_loops_leave_out_the_retry_stubs_after_exit():
    """0xb0 → 0x40 is an mbarrier wait's out-of-line retry jumping back into the body: it crosses the EXIT, so it
    is no loop (it would otherwise be the widest "loop" and the hot loop of every TMA kernel)."""
    _, spans = ins.loops(STUB_SASS)
    assert spans == [(0x10, 0x70), (0x90, 0xa0)]


def test_main_loop_counts_its_body():
    """Of the loop 0x10-0x70: 7 instructions, one barrier, two loads (16 + 2 bytes) and a store (8 bytes)."""
    assert ins.main_loop(STUB_SASS) == dict(instructions=7, mma=0, barriers=1, loads=2, stores=1, global_bytes=26,
                                            steps=1)
    assert ins.main_loop("        /*0000*/                   EXIT ;") == dict(instructions=0, mma=0, barriers=0,
                                                                               loads=0, stores=0, global_bytes=0,
                                                                               steps=1)


UNROLLED_SASS = """
        /*0000*/                   MOV R49, c[0x0][0x230] ;
        /*0010*/                   LDG.E.128 R8, desc[UR24][R52.64] ;
        /*0020*/                   LDG.E.128 R12, desc[UR24][R52.64+0x10] ;
        /*0030*/                   IADD3 R49, R49, -0x4, RZ ;
        /*0040*/                   FFMA R46, R46, R8, R12 ;
        /*0050*/                   IADD3 R52, P3, R52, UR5, RZ ;
        /*0060*/                   ISETP.GT.AND P2, PT, R49, 0x3, PT ;
        /*0070*/               @P2 BRA 0x10 ;
        /*0080*/                   LDG.E.128 R8, desc[UR24][R52.64] ;
        /*0090*/                   IADD3 R49, R49, -0x1, RZ ;
        /*00a0*/                   ISETP.NE.U32.AND P0, PT, R49, RZ, PT ;
        /*00b0*/               @P0 BRA 0x80 ;
        /*00c0*/                   EXIT ;
"""


def test_main_loop_reads_an_unrolled_loops_steps():
    """LLVM's 4× unroll of a runtime-count loop: the counter R49 steps by −4 and the loop's ISETP reads it, so
    a trip covers 4 steps; the remainder loop after it steps by 1.  A pointer bumped by a register is no
    counter, and a loop whose ISETP reads no stepped register covers 1."""
    assert ins.main_loop(UNROLLED_SASS)["steps"] == 4
    assert ins.steps([("IADD3", " R49, R49, -0x1, RZ "), ("ISETP", ".NE.U32.AND P0, PT, R49, RZ, PT ")]) == 1
    assert ins.steps([("IADD3", " R4, R4, 0x8, RZ "), ("ISETP", ".GE.AND P0, PT, R4, UR5, PT ")]) == 8
    assert ins.steps([("IADD3", " R4, R4, 0x8, RZ "), ("ISETP", ".GE.AND P0, PT, R5, UR5, PT ")]) == 1
    assert ins.steps([("IADD3", " R4, R4, 0x40, RZ "), ("ISETP", ".GE.AND P0, PT, R4, UR5, PT ")]) == 1
    assert ins.steps([("FFMA", " R1, R1, R2, R3 ")]) == 1


def _kernel_t(X, T, N):
    pass


def test_specialize_keeps_do_not_specialize():
    """fla's kernels declare do_not_specialize=['T']: T then stays an i32 without a divisibility hint, as the JIT
    compiles it (else a T of 1024 would be specialised and the peer's loop compiled for a shape it never sees)."""
    k = JITFunction(_kernel_t, do_not_specialize=["T"])
    sig, constexprs, attrs = ins.specialize(k, dict(X=torch.empty(4, device="meta"), T=1024, N=1024))
    assert sig["T"] == "i32" and sig["N"] == "i32" and (1,) not in attrs and (2,) in attrs


def test_peers_rejects_what_it_does_not_compare(capsys):
    """--peers picks comparisons by family or by a leading part of their names; anything else is one line, exit 2."""
    from bench.tools.inspect_cli import main
    with pytest.raises(SystemExit) as exc:
        main(["--peers", "--only", "scan,conv"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no comparison for conv" in err and err.count("\n") == 1


def test_peers_without_only_runs_every_comparison(tmp_path, monkeypatch):
    """`seqbench inspect --peers` alone runs every comparison on both archs (no --only to refuse)."""
    from bench.tools import inspect_cli, peer_inspect
    asked = []
    monkeypatch.setattr(peer_inspect, "inspect_peers", lambda archs, jobs, names: asked.append(
        peer_inspect.comparisons_for(names, archs)) or [])
    # --json - : the records on stdout, no table (pandas, which the newest-Triton CI venv lacks)
    assert inspect_cli.main(["--peers", "--json", "-", "--out", str(tmp_path)]) == 0
    assert asked == [peer_inspect.comparisons_for(["scan", "lstm_persistent", "attention"], ("sm_80", "sm_90a"))]
    assert {peer_inspect.COMPARISONS[i].kernel for i, _ in asked[0]} == {c.kernel for c in peer_inspect.COMPARISONS}


def test_attention_target_is_met_by_not_shipping_the_pointer_path_where_tma_applies(monkeypatch):
    """#26: "at most 1.05× the TMA path, or not shipped where TMA applies".  The alternative holds, and
    compare() marks the record met with the reason in its note (a stubbed side, no compile)."""
    from bench.tools import peer_inspect as pi
    assert "not shipped where TMA applies" in pi._pointer_not_taken()
    c = next(c for c in pi.COMPARISONS if c.kernel == "attention.fwd.pointer")
    monkeypatch.setattr(pi, "side", lambda kernels, unit, arch: dict(non_mma_per_mma=30.0 if kernels == "ours" else 26.5,
                                                                     registers=1, spill_bytes=0, shared_bytes=0))
    import dataclasses
    stub = dataclasses.replace(c, ours=lambda family: "ours", theirs=lambda family: "theirs")
    rec = next(r for r in pi.compare(stub, "sm_90a") if r["metric"] == "non_mma_per_mma")
    assert rec["ratio"] > 1.05 and rec["met"] is True and "met instead" in rec["note"]
    assert next(r for r in pi.compare(dataclasses.replace(stub, otherwise=None), "sm_90a")
                if r["metric"] == "non_mma_per_mma")["met"] is False


def _peers_cli(tmp_path, *args) -> list[dict]:
    """The records `seqbench inspect --peers *args` writes with --json, run as a user runs it (a child process
    without the interpreter, output folder tmp_path/d)."""
    import json
    import os
    import subprocess
    import sys
    out = tmp_path / "peers.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "bench.cli", "inspect", "--peers", *args, "--json", str(out),
                           "--out", str(tmp_path / "d"), "--jobs", "2"],
                          env=env, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_peers_the_scans_plans_meet_their_targets(tmp_path):
    """`seqbench inspect --peers` on the two plans linear_scan picks, the sequential one against fla's
    fused_recurrent_hgrn and the chunked one against fla's chunk_hgrn, compiled for sm_90a: the JSON records
    name kernel, peer, arch, metric, ours, peer_value and ratio, and the instructions per element stay within
    #26's target (1.2× fla's), spill-free.  The static performance goal, tracked."""
    pytest.importorskip("fla")
    records = _peers_cli(tmp_path, "--only", "scan.sequential,scan.chunked", "--arch", "sm_90a")
    assert {r["kernel"] for r in records} == {"scan.sequential.fwd", "scan.sequential.bwd", "scan.chunked.fwd",
                                              "scan.chunked.bwd"}
    for r in records:
        assert {"kernel", "peer", "arch", "metric", "ours", "peer_value", "ratio"} <= set(r) and r["arch"] == "sm_90a"
        assert not r["note"], r
    targets = [r for r in records if r["target"]]
    assert len(targets) == 4 and all(r["metric"] == "instructions_per_element" and r["met"] for r in targets), targets
    assert all(r["ours"] == 0 for r in records if r["metric"] == "spill_bytes")
    assert (tmp_path / "d" / "peers.md").exists() and (tmp_path / "d" / "peers.csv").exists()


def test_peers_the_persistent_lstm_meets_its_targets(tmp_path):
    """#26's targets for the persistent LSTM at FlashRNN's 12 heads × 64 (fp16, B 16), as `seqbench inspect
    --peers` records them for sm_80 and sm_90a: the forward within 1.0× FlashRNN's non-MMA instructions per
    step, the backward at most 20 barriers a step (its W_hh slice on chip: test_lstm_persistent's test_plans),
    spill-free.  FlashRNN's own backward does not compile in fp16, so those records carry no ratio."""
    pytest.importorskip("flashrnn")
    records = _peers_cli(tmp_path, "--only", "lstm_persistent")
    fwd = [r for r in records if r["kernel"] == "lstm_persistent.fwd" and r["metric"] == "non_mma_per_step"]
    barriers = [r for r in records if r["kernel"] == "lstm_persistent.bwd" and r["metric"] == "barriers_per_step"]
    assert {r["arch"] for r in fwd} == {r["arch"] for r in barriers} == {"sm_80", "sm_90a"}
    assert all(r["ratio"] <= 1.0 and r["met"] for r in fwd), fwd
    assert all(r["ours"] <= 20 and r["met"] for r in barriers), barriers
    assert all(r["ours"] == 0 for r in records if r["metric"] == "spill_bytes")
