"""Persistent LSTM layer: the time loop runs inside the kernel (Persistent RNNs, Diamos et al. 2016;
cuDNN's PERSIST_STATIC; FlashRNN), forward and backward.

Hidden size HID = heads × DH.  With ``heads > 1`` the recurrent matrix is block-diagonal (FlashRNN's
NH × DH): ``w_hh`` has shape (heads, 4·DH, DH) and head n's gates see only head n's hidden units.
With ``heads == 1`` it is ``nn.LSTM``'s (4·HID, HID) matrix.  The gate vector keeps ``nn.LSTM``'s layout
(i, f, g, o blocks of HID), head n owning columns n·DH … n·DH + DH − 1 of each block.

A program owns BLOCK_H hidden units of one head (all four gates) for BLOCK_B batch rows:

* one program per head (BLOCK_H >= DH): it depends on no other program, so one launch runs all T
  steps (also in the interpreter), W_hh's slice loaded once when it fits one K block;
* a head split over several programs (up to HID = 1024 as one head): after each step every program
  must see the others' h.  On a GPU, when the grid fits on the SMs at once, one launch runs all
  steps with a grid-wide barrier (an atomic counter) between steps; otherwise — and always in the
  interpreter, where programs run one after another — one launch per step, the barrier compiled out.

Step t (forward):  a = xw[t] + W h[t-1];  c = f∘c + i∘g;  h[t] = o∘tanh(c)   (xw holds x W_ihᵀ + biases)
Step t (backward, reverse time):  dh[t] = dout[t] + Wᵀ ∂a[t+1];  the pointwise backward gives ∂a[t]
and the carried dc;  after t = 0, dh0 = Wᵀ ∂a[0].  dW_hh = Σ ∂aᵀ h[t-1] is one batched GEMM.

Dimensions (one meaning per letter in every kernel file):
    B    batch                 T    time steps              IN   input size
    HID  hidden size = NH · DH NH   heads (``heads``)       DH   head size
    BLOCK_H / BLOCK_B / BLOCK_K  a program's hidden units / batch rows / K block;  TILES  programs per head
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), dims t time, b batch, h hidden unit,
g gate-vector column, n head, r weight row, k reduction: e.g. ``stride_xt, stride_xb, stride_xg`` of xw.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import (capturing, check_rnn_step, check_tensor, dot_options, once_differentiable,
                             register_deferred_check, strides, wide_offsets)
from kernels._rnn import lstm_pointwise_bwd, split4, store4, tanh
from kernels._tl import cast, dot_acc, sigmoid


@triton.jit
def grid_barrier(BAR, target, MAX_SPIN: tl.constexpr):
    """Wait until the programs of the grid have arrived `target` times in total (BAR[0] counts them).

    Only for a co-resident grid.  If it is not (another kernel holds SMs), a program gives up after
    MAX_SPIN polls and raises BAR[1]; every program then stops waiting, and the launcher raises an
    error instead of the GPU hanging."""
    tl.debug_barrier()
    tl.atomic_add(BAR, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(BAR, 0, sem="acquire", scope="gpu")
    stuck = tl.atomic_add(BAR + 1, 0, sem="relaxed", scope="gpu")
    spins = 0
    while (seen < target) & (stuck == 0):
        seen = tl.atomic_add(BAR, 0, sem="acquire", scope="gpu")
        stuck = tl.atomic_add(BAR + 1, 0, sem="relaxed", scope="gpu")
        spins += 1
        if spins >= MAX_SPIN:
            stuck = tl.atomic_max(BAR + 1, 1, sem="relaxed", scope="gpu") + 1
    tl.debug_barrier()


@triton.jit
def _lstm_persist_fwd(XW, HS, CCARRY, W, CS, GATES, BAR, LENGTHS, t_lo, t_hi, B, HID: tl.constexpr, DH: tl.constexpr,
                      TILES: tl.constexpr,
                      stride_xt, stride_xb, stride_xg, stride_ht, stride_hb, stride_hh, stride_wn, stride_wr,
                      stride_wk, stride_ct, stride_cb, stride_ch, stride_gt, stride_gb, stride_gh,
                      STORE_GATES: tl.constexpr, HAS_LEN: tl.constexpr, BARRIER: tl.constexpr, MAX_SPIN: tl.constexpr,
                      HOIST_W: tl.constexpr, H_ON_CHIP: tl.constexpr, INDEX_64: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                      PREC: tl.constexpr):
    """Steps t_lo … t_hi−1.  HS is (T+1, B, HID) with HS[0] = h0; c enters and leaves through CCARRY.
    With HAS_LEN a row at or past its length (LENGTHS[b]) keeps its h and c: each row's final state is
    the one at its own last step.  H_ON_CHIP (the head is this program's, W_hh's slice one K block): h[t−1]
    stays in registers for the next step's dot, not re-read from HS, and no barrier orders the two (the
    launcher leaves it off with HAS_LEN)."""
    pid = tl.program_id(0)
    n = pid // TILES
    j0 = (pid % TILES) * BLOCK_H
    r = tl.arange(0, 4 * BLOCK_H)
    jj = j0 + r % BLOCK_H
    row_ok = jj < DH
    w_rows = (r // BLOCK_H) * DH + jj              # row of W[n]
    g_cols = (r // BLOCK_H) * HID + n * DH + jj      # column of the gate vector
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = offs_b < B
    hj = j0 + tl.arange(0, BLOCK_H)
    mask = (hj < DH)[:, None] & b_ok[None, :]
    hcol = n * DH + hj
    offs_k = tl.arange(0, BLOCK_K)
    w_base = W + n * stride_wn
    if HOIST_W:  # the whole slice of W_hh in one K block: load it once, keep it on chip for every step
        w = tl.load(w_base + w_rows[:, None] * stride_wr + offs_k[None, :] * stride_wk,
                    mask=row_ok[:, None] & (offs_k < DH)[None, :], other=0.0)
    c = tl.load(CCARRY + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, mask=mask, other=0.0).to(tl.float32)
    if HAS_LEN:
        lens = tl.load(LENGTHS + offs_b, mask=b_ok, other=0)
    if H_ON_CHIP:
        h = tl.load(HS + t_lo * stride_ht + offs_b[None, :] * stride_hb + hcol[:, None] * stride_hh, mask=mask,
                    other=0.0)
    for t32 in range(t_lo, t_hi):
        if INDEX_64:     # (T, B, 4·HID) passes 2³¹ elements at shipped shapes (B 512, T 2048, d 1024)
            t = tl.cast(t32, tl.int64)
        else:
            t = t32
        acc = tl.load(XW + t * stride_xt + offs_b[None, :] * stride_xb + g_cols[:, None] * stride_xg,
                      mask=row_ok[:, None] & b_ok[None, :], other=0.0).to(tl.float32)
        if H_ON_CHIP:       # rows past DH or B hold 0 (their loads were masked), as HS's masked loads gave
            acc = dot_acc(w, h, acc, PREC)
        else:
            h_prev = HS + t * stride_ht + n * DH * stride_hh
            for k0 in range(0, DH, BLOCK_K):
                kk = k0 + offs_k
                k_ok = kk < DH
                if not HOIST_W:
                    w = tl.load(w_base + w_rows[:, None] * stride_wr + kk[None, :] * stride_wk,
                                mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                hk = tl.load(h_prev + offs_b[None, :] * stride_hb + kk[:, None] * stride_hh,
                             mask=b_ok[None, :] & k_ok[:, None], other=0.0)
                acc = dot_acc(w, hk, acc, PREC)
        a_i, a_f, a_g, a_o = split4(acc, BLOCK_H, BLOCK_B)
        i = sigmoid(a_i)
        f = sigmoid(a_f)
        g = tanh(a_g)
        o = sigmoid(a_o)
        c_new = f * c + i * g
        h_new = o * tanh(c_new)
        ty = HS.dtype.element_ty
        if HAS_LEN:
            live = (t32 < lens)[None, :]
            h_old = tl.load(HS + t * stride_ht + offs_b[None, :] * stride_hb + hcol[:, None] * stride_hh, mask=mask,
                            other=0.0)
            h = tl.where(live, cast(h_new, ty), h_old)
            c = tl.where(live, c_new, c)
        else:
            h = cast(h_new, ty)
            c = c_new
        tl.store(HS + (t + 1) * stride_ht + offs_b[None, :] * stride_hb + hcol[:, None] * stride_hh, h, mask=mask)
        tl.store(CS + t * stride_ct + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, cast(c, ty), mask=mask)
        if STORE_GATES:
            store4(GATES + t * stride_gt + offs_b[None, :] * stride_gb + hcol[:, None] * stride_gh, HID * stride_gh, i,
                   f, g, o, mask)
        if BARRIER:
            grid_barrier(BAR, (t32 - t_lo + 1) * tl.num_programs(0) * tl.num_programs(1), MAX_SPIN)
        elif not H_ON_CHIP:
            tl.debug_barrier()  # this program's h[t] stores are visible to all its threads
    tl.store(CCARRY + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, c, mask=mask)


@triton.jit
def _lstm_persist_bwd(DOUT, DG, GATES, CS, C0, W, DCCARRY, DHN, DH0, BAR, LENGTHS, DHCARRY, t_lo, t_hi, T, B,
                      HID: tl.constexpr, DH: tl.constexpr, TILES: tl.constexpr,
                      stride_ot, stride_ob, stride_oh, stride_dt, stride_db, stride_dg, stride_gt, stride_gb,
                      stride_gh, stride_ct, stride_cb, stride_ch, stride_wn, stride_wr, stride_wk,
                      HAS_C0: tl.constexpr, HAS_DHN: tl.constexpr, HAS_LEN: tl.constexpr, FINAL: tl.constexpr,
                      BARRIER: tl.constexpr, INDEX_64: tl.constexpr,
                      MAX_SPIN: tl.constexpr, HOIST_W: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                      PREC: tl.constexpr):
    """Steps t_hi−1 down to t_lo; with FINAL, then dh0 = Wᵀ ∂a[0].  dc enters and leaves through DCCARRY.

    Tiles are (BLOCK_H, BLOCK_B), the units by the batch rows, as in the forward: dhᵀ = W[n][:, units]ᵀ ∂a[t+1]ᵀ
    restricted to them.  (The batch-major tiles this kernel had left each loaded tile in the dot's layout,
    one conversion through shared memory apiece: 27 barriers a step against 20, `seqbench inspect --peers`.)
    With HAS_LEN a step at or past a row's length is the identity: its ∂a is zero and dh, dc pass through
    (dh through DHCARRY, this program's units only).  HOIST_W (the head is this program's and BLOCK_K its
    4·DH rows): W[n]'s slice for these units is loaded once and stays on chip; each step's dot is one K block.
    """
    pid = tl.program_id(0)
    n = pid // TILES
    j0 = (pid % TILES) * BLOCK_H
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = offs_b < B
    hj = j0 + tl.arange(0, BLOCK_H)
    h_ok = hj < DH
    mask = h_ok[:, None] & b_ok[None, :]
    hcol = n * DH + hj
    r = tl.arange(0, 4 * BLOCK_H)          # stacked gate rows, gate r // BLOCK_H, as the forward's
    g_ok = j0 + r % BLOCK_H < DH
    g_cols = (r // BLOCK_H) * HID + n * DH + j0 + r % BLOCK_H
    offs_k = tl.arange(0, BLOCK_K)
    w_base = W + n * stride_wn
    dc = tl.load(DCCARRY + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, mask=mask, other=0.0).to(tl.float32)
    w = None
    if HOIST_W:     # rows r = q·DH + i of W[n] (gate q), columns this program's units
        w = tl.load(w_base + offs_k[None, :] * stride_wr + hj[:, None] * stride_wk,
                    mask=(offs_k < 4 * DH)[None, :] & h_ok[:, None], other=0.0)
    # c[t] of the first step; each later step's is the c[t − 1] the one before it read (one load a step, not two)
    t_last = t_hi - 1
    if INDEX_64:
        t_last = tl.cast(t_last, tl.int64)
    c1 = tl.load(CS + t_last * stride_ct + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch,
                 mask=mask & (offs_b < tl.where(t_hi > t_lo, B, 0))[None, :], other=0.0).to(tl.float32)
    for s in range(0, t_hi - t_lo):
        if INDEX_64:     # 64-bit time offsets, as in the forward
            t = tl.cast(t_hi - 1 - s, tl.int64)
        else:
            t = t_hi - 1 - s
        # dh[t] for this program's units: dout[t] + (∂a[t+1] of the whole head) W[n][:, units]
        dh = tl.load(DOUT + t * stride_ot + offs_b[None, :] * stride_ob + hcol[:, None] * stride_oh, mask=mask,
                     other=0.0).to(tl.float32)
        if t + 1 < T:
            dh = _dh_from_next(dh, DG + (t + 1) * stride_dt, w_base, w, offs_b, b_ok, hj, h_ok, offs_k, n, HID, DH,
                               stride_db, stride_dg, stride_wr, stride_wk, BLOCK_K, HOIST_W, PREC)
            if HAS_LEN:   # step t+1 was the identity for a finished row: its dh passes straight down
                done = (t + 1 >= tl.load(LENGTHS + offs_b, mask=b_ok, other=0))[None, :] & mask
                dh += tl.load(DHCARRY + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, mask=done, other=0.0)
        elif HAS_DHN:
            dh += tl.load(DHN + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, mask=mask,
                          other=0.0).to(tl.float32)
        # the four gate tiles as one stacked load, split on chip (one layout change for the four, not four)
        i, f, g, o = split4(tl.load(GATES + t * stride_gt + offs_b[None, :] * stride_gb + g_cols[:, None] * stride_gh,
                                    mask=g_ok[:, None] & b_ok[None, :], other=0.0).to(tl.float32), BLOCK_H, BLOCK_B)
        if t > 0:
            c = tl.load(CS + (t - 1) * stride_ct + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, mask=mask,
                        other=0.0).to(tl.float32)
        elif HAS_C0:
            c = tl.load(C0 + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, mask=mask,
                        other=0.0).to(tl.float32)
        else:
            c = tl.zeros([BLOCK_H, BLOCK_B], tl.float32)
        if HAS_LEN:
            # this program's own units, read back by the same threads next step (in memory, not registers)
            tl.store(DHCARRY + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, dh, mask=mask)
            live = (t < tl.load(LENGTHS + offs_b, mask=b_ok, other=0))[None, :]
            # a finished row's step is the identity: zero dh and dc into it give ∂a = 0; its dc is kept
            da_i, da_f, da_g, da_o, dc_new = lstm_pointwise_bwd(i, f, g, o, c, c1, tl.where(live, dh, 0.0),
                                                                tl.where(live, dc, 0.0))
            dc = tl.where(live, dc_new, dc)
        else:
            da_i, da_f, da_g, da_o, dc = lstm_pointwise_bwd(i, f, g, o, c, c1, dh, dc)
        store4(DG + t * stride_dt + offs_b[None, :] * stride_db + hcol[:, None] * stride_dg, HID * stride_dg, da_i,
               da_f, da_g, da_o, mask)
        c1 = c
        if BARRIER:
            grid_barrier(BAR, (s + 1) * tl.num_programs(0) * tl.num_programs(1), MAX_SPIN)
        else:
            tl.debug_barrier()
    tl.store(DCCARRY + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, dc, mask=mask)
    if FINAL:
        dh0 = _dh_from_next(tl.zeros([BLOCK_H, BLOCK_B], tl.float32), DG, w_base, w, offs_b, b_ok, hj, h_ok, offs_k,
                            n, HID, DH, stride_db, stride_dg, stride_wr, stride_wk, BLOCK_K, HOIST_W, PREC)
        tl.store(DH0 + offs_b[None, :] * stride_cb + hcol[:, None] * stride_ch, dh0, mask=mask)


@triton.jit
def _dh_from_next(dh, DG_T, w_base, w, offs_b, b_ok, hj, h_ok, offs_k, n, HID, DH, stride_db, stride_dg, stride_wr,
                  stride_wk,
                  BLOCK_K: tl.constexpr, HOIST_W: tl.constexpr, PREC: tl.constexpr):
    """dhᵀ (units × BLOCK_B) += W[n][:, units]ᵀ @ ∂a_t[:, head n's 4·DH gate columns]ᵀ, K over the 4·DH rows
    (with HOIST_W one block, W's slice the caller's ``w``)."""
    for k0 in range(0, 4 * DH, BLOCK_K):
        rr = k0 + offs_k
        r_ok = rr < 4 * DH
        cols = (rr // DH) * HID + n * DH + rr % DH
        da = tl.load(DG_T + offs_b[None, :] * stride_db + cols[:, None] * stride_dg,
                     mask=r_ok[:, None] & b_ok[None, :], other=0.0)
        if HOIST_W:
            wk = w
        else:
            wk = tl.load(w_base + rr[None, :] * stride_wr + hj[:, None] * stride_wk,
                         mask=r_ok[None, :] & h_ok[:, None], other=0.0)
        dh = dot_acc(wk, da, dh, PREC)
    return dh


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------

# A head up to this size is one program (forward / backward); larger heads are split over programs.
# The backward holds twice the live tiles (gates, c, dc, dh), so it splits heads above 128.
MAX_HEAD_PER_PROGRAM = {False: 256, True: 128}
SPLIT_BLOCK_H = 16
# Polls of the barrier counter before a program declares the grid stuck (~1 s at ~0.5 us a poll).
MAX_SPIN = 1 << 21


@dataclass(frozen=True)
class Plan:
    """How a layer is tiled and launched: the kernel's tile constexprs, the grid, and the launch mode."""
    BLOCK_H: int          # hidden units of one head per program (all four gates)
    BLOCK_B: int          # batch rows per program
    BLOCK_K: int          # K block of the recurrent dot
    TILES: int            # programs per head (1: the head is one program)
    HOIST_W: bool         # W_hh's slice loaded once and kept on chip for every step
    grid: tuple[int, int]
    single_launch: bool   # one launch runs every step (else one launch per step)
    barrier: bool         # programs of a split head meet at the grid barrier after each step
    num_warps: int
    num_stages: int = 1   # what `seqbench inspect` compiled and checked

    def constexprs(self) -> dict:
        return dict(BLOCK_H=self.BLOCK_H, BLOCK_B=self.BLOCK_B, BLOCK_K=self.BLOCK_K, TILES=self.TILES)

    @property
    def h_on_chip(self) -> bool:
        """The forward keeps h[t−1] in registers: the head is one program and W_hh's slice one K block."""
        return self.TILES == 1 and self.HOIST_W and self.BLOCK_K == self.BLOCK_H

    def launch(self) -> dict:
        """Launch options.  A barrier grid is launched cooperatively: the driver then refuses a grid that
        cannot be co-resident instead of letting it deadlock (MAX_SPIN stays as the last resort)."""
        coop = dict(launch_cooperative_grid=True) if self.barrier else {}
        return dict(BARRIER=self.barrier, num_warps=self.num_warps, num_stages=self.num_stages, **coop)

    def per_step(self) -> "Plan":
        """The same tiles launched once per step, the barrier compiled out."""
        return dataclasses.replace(self, single_launch=False, barrier=False)


def plan(HID: int, heads: int, B: int, dtype: torch.dtype, sms: int, block_h: int | None = None,
         backward: bool = False, hopper: bool = True) -> Plan:
    """Tiles and launch mode for a layer on a GPU with ``sms`` SMs (0: the interpreter)."""
    dh = HID // heads
    gpu = sms > 0
    if block_h is None:
        limit = MAX_HEAD_PER_PROGRAM[backward]
        if dh <= limit:
            block_h = max(16, triton.next_power_of_2(dh))
        else:
            block_h = SPLIT_BLOCK_H if dh > 256 or not gpu else limit
    tiles = triton.cdiv(dh, block_h)
    # 32-row batch tiles only for 16-bit one-program heads: fp32 tiles and the shared-memory W_hh slices
    # of split heads leave no registers for them (`seqbench inspect` shows the spills).
    wide_b = gpu and dtype != torch.float32 and not (tiles > 1 and hopper)
    block_b = min(32, max(16, triton.next_power_of_2(B))) if wide_b else 16
    rows = 4 * block_h
    elt = torch.finfo(dtype).bits // 8
    whole = max(16, triton.next_power_of_2(dh))
    # W_hh's slice stays on chip for all steps when it fits: 32 KiB in general, 128 KiB for the slice of
    # a split head on Hopper, where wgmma reads it from shared memory (8 warps; on sm_80 it would spill).
    budget = 128 * 1024 if tiles > 1 and hopper else 32 * 1024
    if backward and tiles == 1 and rows * whole * elt <= budget:
        block_k = 4 * block_h       # the head's W_hh slice on chip: one K block over its 4·DH rows
    elif backward:
        # (warps, K block) per tile size from a compile sweep: other pairs leave ptxas spilling a register
        block_k = 32 if rows < 256 else 16
    elif rows * whole * elt <= budget:
        block_k = whole
    else:
        block_k = max(16, min(64, 8192 // rows))      # streamed in K blocks (from L2) every step
    hoist = block_k >= (4 * dh if backward else dh)
    grid = (heads * tiles, triton.cdiv(B, block_b))
    # One launch for all steps when no program waits on another, or (GPU) when the grid is co-resident.
    single = tiles == 1 or (gpu and grid[0] * grid[1] <= sms)
    return Plan(BLOCK_H=block_h, BLOCK_B=block_b, BLOCK_K=block_k, TILES=tiles, HOIST_W=hoist, grid=grid,
                single_launch=single, barrier=single and tiles > 1,
                num_warps=8 if rows >= 256 and backward or rows >= 512 or (hoist and tiles > 1) else 4)


def fwd_args(xw, hs, ccarry, w, cs, gates, bar, HID, DH, p, lengths=None) -> dict:
    B = xw.shape[1]
    return dict(XW=xw, HS=hs, CCARRY=ccarry, W=w, CS=cs, GATES=gates, BAR=bar, LENGTHS=lengths, B=B, HID=HID, DH=DH,
                **strides("x", xw, "tbg"), **strides("h", hs, "tbh"),
                **strides("w", w, "nrk"), **strides("c", cs, "tbh"),
                **strides("g", gates, "tbh"),
                STORE_GATES=gates is not None, HAS_LEN=lengths is not None, MAX_SPIN=MAX_SPIN, HOIST_W=p.HOIST_W,
                H_ON_CHIP=p.h_on_chip and lengths is None,   # with lengths, ptxas spilled 8 B (sm_80, fp16)
                INDEX_64=wide_offsets(xw, hs, cs, gates),
                **p.constexprs(),
                **dot_options(xw.dtype, xw.device))


def bwd_args(dout, dg, gates, cs, c0, w, dccarry, dhn, dh0, bar, HID, DH, p, lengths=None, dhcarry=None) -> dict:
    T, B = dout.shape[0], dout.shape[1]
    return dict(DOUT=dout, DG=dg, GATES=gates, CS=cs, C0=c0, W=w, DCCARRY=dccarry, DHN=dhn, DH0=dh0, BAR=bar,
                LENGTHS=lengths, DHCARRY=dhcarry, T=T, B=B, HID=HID, DH=DH,
                **strides("o", dout, "tbh"), **strides("d", dg, "tbg"),
                **strides("g", gates, "tbh"), **strides("c", cs, "tbh"),
                **strides("w", w, "nrk"), HAS_C0=c0 is not None, HAS_DHN=dhn is not None,
                HAS_LEN=lengths is not None, MAX_SPIN=MAX_SPIN, HOIST_W=p.HOIST_W,
                INDEX_64=wide_offsets(dout, dg, gates, cs),
                **p.constexprs(), **dot_options(dout.dtype, dout.device))


def _device_plan(HID, heads, B, dtype, device, block_h, backward=False) -> Plan:
    if device.type != "cuda":
        return plan(HID, heads, B, dtype, 0, block_h, backward)
    props = torch.cuda.get_device_properties(device)
    return plan(HID, heads, B, dtype, props.multi_processor_count, block_h, backward, hopper=props.major >= 9)


def _forward(xw, h0, c0, w, heads, store_gates, block_h=None, lengths=None):
    T, B, HID4 = xw.shape
    HID, DH = HID4 // 4, HID4 // 4 // heads
    p = _device_plan(HID, heads, B, xw.dtype, xw.device, block_h)
    hs = torch.empty(T + 1, B, HID, device=xw.device, dtype=xw.dtype)
    hs[0] = h0 if h0 is not None else 0
    ccarry = c0.to(torch.float32, copy=True).contiguous() if c0 is not None else torch.zeros(B, HID, device=xw.device)
    cs = torch.empty(T, B, HID, device=xw.device, dtype=xw.dtype)
    gates = torch.empty(T, B, HID4, device=xw.device, dtype=xw.dtype) if store_gates else None
    bar = torch.zeros(2, device=xw.device, dtype=torch.int32)
    args = fwd_args(xw, hs, ccarry, w, cs, gates, bar, HID, DH, p, lengths)
    def launches(p):
        return [dict(t_lo=0, t_hi=T)] if p.single_launch else [dict(t_lo=t, t_hi=t + 1) for t in range(T)]
    _run(_lstm_persist_fwd, args, p, bar, launches)
    return hs, cs, gates, ccarry


def _run(kernel, args, p, bar, launches):
    """Launch ``kernel`` for each of ``launches(p)``; a cooperative grid the driver refuses (not co-resident, or
    no cooperative launches here) falls back to one launch per step before any program ran.  A barrier grid's
    timeout flag is read later, without a host sync here (``BARRIER_FLAGS``)."""
    if not p.grid[1]:              # an empty batch: nothing to compute
        return
    BARRIER_FLAGS.check(block=False)   # earlier launches whose flags are ready: a timeout there raises now
    todo = launches(p)
    if p.barrier:
        try:
            kernel[p.grid](**args, **todo[0], **p.launch())
        except RuntimeError as exc:
            if not cooperative_refused(exc):
                raise
            p = p.per_step()
            todo = launches(p)
        else:
            todo = todo[1:]
    for extra in todo:
        kernel[p.grid](**args, **extra, **p.launch())
    if p.barrier and not capturing(bar.device):   # under CUDA-graph capture nothing has run yet to read
        BARRIER_FLAGS.add(bar[1:2])


# CUDA driver results that refuse a cooperative launch rather than fault the kernel: the grid cannot be
# co-resident (CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE), or cooperative launches are not allowed or available
# here (CUDA_ERROR_NOT_PERMITTED, CUDA_ERROR_NOT_SUPPORTED: vGPU, some MIG slices), with cuGetErrorString's
# text for each, which is what Triton's launcher raises ("Triton Error [CUDA]: <text>").
COOPERATIVE_REFUSALS = {720: "too many blocks in cooperative launch", 800: "operation not permitted",
                        801: "operation not supported"}


@functools.lru_cache(maxsize=None)
def _refusal_texts() -> frozenset:
    """The driver's own text for each refusal code (cuGetErrorString), else the table's."""
    texts = set(COOPERATIVE_REFUSALS.values())
    try:
        import ctypes
        cuda = ctypes.CDLL("libcuda.so.1")
        for code in COOPERATIVE_REFUSALS:
            text = ctypes.c_char_p()
            if cuda.cuGetErrorString(code, ctypes.byref(text)) == 0 and text.value:
                texts.add(text.value.decode())
    except (OSError, AttributeError):           # no driver here: the documented texts
        pass
    return frozenset(texts)


def cooperative_refused(exc: BaseException) -> bool:
    """Whether a launch error is the driver refusing the cooperative grid (by the text of its error code)."""
    prefix = "Triton Error [CUDA]: "
    text = str(exc)
    return text.startswith(prefix) and text[len(prefix):].strip() in _refusal_texts()


class BarrierFlags:
    """The grid-barrier timeout flags of launches not yet read.  Each is copied to pinned host memory without a
    sync and read once its copy has completed: at a later call, or when ``check(block=True)`` waits for all of
    them (``check_barriers``, which the benchmark calls after its timed region).  A raised flag is an error."""

    def __init__(self):
        self.pending = []           # (CUDA event or None, host copy of the flag)

    def add(self, flag: torch.Tensor) -> None:
        if flag.device.type == "cuda":
            host = torch.empty(flag.shape, dtype=flag.dtype, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.pending.append((event, host))
        else:
            self.pending.append((None, flag.clone()))

    def check(self, block: bool = True) -> None:
        """Read the flags whose copies are done (all of them, waiting, with ``block``); raise if one is set."""
        still, stuck = [], False
        for event, host in self.pending:
            if event is not None and not event.query():
                if not block:
                    still.append((event, host))
                    continue
                event.synchronize()
            stuck = stuck or bool(host.item())
        self.pending = still
        if stuck:
            raise RuntimeError("the persistent LSTM's grid barrier timed out: its programs were not all resident at "
                               "once (another kernel on the GPU?); results of that call are invalid")


BARRIER_FLAGS = BarrierFlags()


def check_barriers() -> None:
    """Wait for every persistent-LSTM launch so far and raise if a grid barrier timed out in any of them."""
    BARRIER_FLAGS.check(block=True)


register_deferred_check(check_barriers)


def _backward(dout, dhn, dcn, hs, cs, gates, c0, w, heads, block_h=None, lengths=None):
    T, B, HID = dout.shape
    DH = HID // heads
    p = _device_plan(HID, heads, B, dout.dtype, dout.device, block_h, backward=True)
    dg = torch.empty_like(gates)
    dccarry = dcn.to(torch.float32, copy=True).contiguous() if dcn is not None else torch.zeros(B, HID,
                                                                                                device=dout.device)
    dh0 = torch.empty(B, HID, device=dout.device, dtype=torch.float32)
    bar = torch.zeros(2, device=dout.device, dtype=torch.int32)
    dhcarry = torch.zeros(B, HID, device=dout.device) if lengths is not None else None
    args = bwd_args(dout, dg, gates, cs, c0, w, dccarry, dhn, dh0, bar, HID, DH, p, lengths, dhcarry)
    def launches(p):
        if p.single_launch:
            return [dict(t_lo=0, t_hi=T, FINAL=True)]
        steps = [dict(t_lo=t, t_hi=t + 1, FINAL=False) for t in range(T - 1, -1, -1)]
        return steps + [dict(t_lo=0, t_hi=0, FINAL=True)]
    _run(_lstm_persist_bwd, args, p, bar, launches)
    # dW_hh[n] = Σ_(t,b) ∂a[t][head n rows]ᵀ h[t-1][head n units]: one batched GEMM over the heads
    da = dg.reshape(T * B, 4, heads, DH).permute(2, 0, 1, 3).reshape(heads, T * B, 4 * DH)
    hp = hs[:-1].reshape(T * B, heads, DH).permute(1, 0, 2)
    dw = torch.bmm(da.transpose(1, 2), hp)
    return dg, dh0, dccarry, dw


class _PersistentLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, h0, c0, w, heads, block_h, lengths):
        hs, cs, gates, ccarry = _forward(xw, h0, c0, w, heads, True, block_h, lengths)
        ctx.save_for_backward(c0, w, hs, cs, gates, lengths)
        ctx.heads, ctx.block_h, ctx.has_h0 = heads, block_h, h0 is not None
        return hs[1:], hs[-1].clone(), ccarry.to(xw.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dhn, dcn):
        c0, w, hs, cs, gates, lengths = ctx.saved_tensors
        dout = dout.contiguous() if dout is not None else torch.zeros_like(hs[1:])
        dhn = dhn.contiguous() if dhn is not None else None
        dg, dh0, dc0, dw = _backward(dout, dhn, dcn, hs, cs, gates, c0, w, ctx.heads, ctx.block_h, lengths)
        return (dg, dh0.to(dout.dtype) if ctx.has_h0 else None, dc0.to(dout.dtype) if c0 is not None else None,
                dw, None, None, None)


def _check(x, h0, c0, w_ih, w_hh, b_ih, b_hh, heads):
    check_tensor("x", x, 3, "(T, B, input_size)")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive int, got {heads!r}")
    if x.shape[0] < 1:
        raise ValueError(f"x must hold at least one time step, got shape {tuple(x.shape)}")
    check_rnn_step(x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, 4, heads)


def _check_lengths(lengths, T: int, B: int, device):
    """lengths as int32 (B,) on the device, or None; ValueError/TypeError naming it."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {getattr(lengths, 'dtype', type(lengths).__name__)}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per batch row), got {tuple(lengths.shape)}")
    if B and not capturing(lengths.device) and (lengths.min().item() < 1 or lengths.max().item() > T):
        raise ValueError(f"lengths must lie in 1 … {T} (the time steps), got {lengths.tolist()}")
    return lengths.to(device=device, dtype=torch.int32).contiguous()


def lstm_persistent(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, heads: int = 1, batch_first: bool = False,
                    lengths=None, _block_h: int | None = None):
    """One LSTM layer with the time loop inside the kernel; ``nn.LSTM`` semantics for heads=1.

    x: (T, B, I) or (B, T, I) with batch_first; hx: (h0, c0) each (B, HID) or None;
    w_ih: (4·HID, I); w_hh: (4·HID, HID) for heads=1, (heads, 4·DH, DH) block-diagonal for heads>1.
    ``lengths`` (B,) integers in 1 … T, any order (padded variable-length input): inside the kernel a row at
    or past its length keeps its state and its output repeats it; (h_n, c_n) hold each row's state at its
    own last step.  Returns (out, (h_n, c_n)).  Differentiable (persistent backward too).
    """
    if batch_first and isinstance(x, torch.Tensor) and x.ndim == 3:
        x = x.transpose(0, 1)
    h0, c0 = (None, None) if hx is None else hx
    _check(x, h0, c0, w_ih, w_hh, b_ih, b_hh, heads)
    T, B, IN = x.shape
    lengths = _check_lengths(lengths, T, B, x.device)
    xw = (x.reshape(T * B, IN) @ w_ih.t()).reshape(T, B, w_ih.shape[0])
    if b_ih is not None:
        xw = xw + b_ih
    if b_hh is not None:
        xw = xw + b_hh
    w = w_hh.unsqueeze(0) if heads == 1 else w_hh
    args = (xw.contiguous(), h0.contiguous() if h0 is not None else None,
            c0.contiguous() if c0 is not None else None, w)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        out, hn, cn = _PersistentLSTM.apply(*args, heads, _block_h, lengths)
    else:
        hs, _, _, ccarry = _forward(*args, heads, False, _block_h, lengths)
        out, hn, cn = hs[1:], hs[-1].clone(), ccarry.to(xw.dtype)  # h_n never aliases out
    if batch_first:
        out = out.transpose(0, 1)
    return out, (hn, cn)


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

# Kernels that must issue Hopper wgmma (HGMMA) on sm_90a in 16 bits: the forward of every layout.  The
# backward's dots have the batch (16) as M, below wgmma's 64, and use mma.sync (HMMA) tensor cores.
WGMMA = ("lstm_persistent.fwd.",)

# (label, hidden, heads, batch): FlashRNN's 12 × 64 heads, one 768 and one 1024 head split over
# programs with the grid barrier, 128- and 256-wide heads (FlashRNN's Triton kernel stops below 256),
# and batch 64 (32-row batch tiles).  Each plan() branch is among them.
INSPECTED_LAYOUTS = (("heads12x64", 768, 12, 16), ("h768", 768, 1, 16), ("h1024", 1024, 1, 16),
                     ("heads8x128", 1024, 8, 16), ("heads4x256", 1024, 4, 16), ("heads12x64_b64", 768, 12, 64),
                     ("h1024_b64", 1024, 1, 64), ("h1024_b512", 1024, 1, 512))
INSPECT_T = 1024
# Layouts also compiled at model_lstm's largest length, where (T, B, 4·HID) passes 2³¹ elements: INDEX_64.
WIDE_T = {"h1024_b512": 2048}
INSPECT_SMS = {"sm80": 108, "sm90": 132}
# Layouts also compiled with per-row lengths (FusedLSTM on a PackedSequence): one program per head, and
# one head split over programs with the grid barrier.
PACKED_LAYOUTS = ("heads12x64", "h768")


def compile_builds(family: str, dtypes=(torch.float16,)):
    """Forward and backward of each inspected layout (its batch; T = 1024, or WIDE_T), as the launcher runs them."""
    for dtype in dtypes:
        for label, HID, heads, B in INSPECTED_LAYOUTS:
            T, DH = WIDE_T.get(label, INSPECT_T), HID // heads
            p = plan(HID, heads, B, dtype, INSPECT_SMS[family], hopper=family == "sm90")
            t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
            f32 = lambda *s: torch.empty(*s, device="meta", dtype=torch.float32)  # noqa: E731
            bar = torch.empty(2, device="meta", dtype=torch.int32)
            xw, hs, cs, w = t(T, B, 4 * HID), t(T + 1, B, HID), t(T, B, HID), t(heads, 4 * DH, DH)
            cfg = triton.Config({"BARRIER": p.barrier}, num_warps=p.num_warps, num_stages=p.num_stages)
            args = fwd_args(xw, hs, f32(B, HID), w, cs, t(T, B, 4 * HID), bar, HID, DH, p)
            args.update(t_lo=0, t_hi=T)
            yield f"lstm_persistent.fwd.{label}", _lstm_persist_fwd, args, cfg
            p = plan(HID, heads, B, dtype, INSPECT_SMS[family], backward=True, hopper=family == "sm90")
            args = bwd_args(t(T, B, HID), t(T, B, 4 * HID), t(T, B, 4 * HID), cs, t(B, HID), w, f32(B, HID), t(B, HID),
                            f32(B, HID),
                            bar, HID, DH, p)
            args.update(t_lo=0, t_hi=T)
            cfg = triton.Config({"BARRIER": p.barrier, "FINAL": True}, num_warps=p.num_warps, num_stages=p.num_stages)
            yield f"lstm_persistent.bwd.{label}", _lstm_persist_bwd, args, cfg
            if label in PACKED_LAYOUTS:       # per-row lengths (packed input): the HAS_LEN code paths
                lens = torch.empty(B, device="meta", dtype=torch.int32)
                pf = plan(HID, heads, B, dtype, INSPECT_SMS[family], hopper=family == "sm90")
                args = fwd_args(xw, hs, f32(B, HID), w, cs, t(T, B, 4 * HID), bar, HID, DH, pf, lens)
                args.update(t_lo=0, t_hi=T)
                cfg_f = triton.Config({"BARRIER": pf.barrier}, num_warps=pf.num_warps, num_stages=pf.num_stages)
                yield f"lstm_persistent.fwd.packed_{label}", _lstm_persist_fwd, args, cfg_f
                pb = plan(HID, heads, B, dtype, INSPECT_SMS[family], backward=True, hopper=family == "sm90")
                args = bwd_args(t(T, B, HID), t(T, B, 4 * HID), t(T, B, 4 * HID), cs, t(B, HID), w, f32(B, HID),
                                t(B, HID), f32(B, HID), bar, HID, DH, pb, lens, f32(B, HID))
                args.update(t_lo=0, t_hi=T)
                cfg_b = triton.Config({"BARRIER": pb.barrier, "FINAL": True}, num_warps=pb.num_warps,
                                      num_stages=pb.num_stages)
                yield f"lstm_persistent.bwd.packed_{label}", _lstm_persist_bwd, args, cfg_b
