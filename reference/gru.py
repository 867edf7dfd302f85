"""PyTorch references for the GRU cell: the textbook equations in plain torch ops, and ``nn.GRUCell``."""
from __future__ import annotations

import torch


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One step, gate order (r, z, n), PyTorch's convention n = tanh(W_in x + b_in + r ∘ (W_hn h + b_hn))."""
    h = torch.zeros(x.shape[0], w_hh.shape[1], dtype=x.dtype, device=x.device) if h is None else h
    gx = x @ w_ih.t() + (b_ih if b_ih is not None else 0)
    gh = h @ w_hh.t() + (b_hh if b_hh is not None else 0)
    xr, xz, xn = gx.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_first: bool = False):
    """One layer as the naive per-step loop: returns (out, h_n)."""
    if batch_first:
        x = x.transpose(0, 1)
    h, outs = h0, []
    for t in range(x.shape[0]):
        h = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        outs.append(h)
    out = torch.stack(outs)
    return (out.transpose(0, 1) if batch_first else out), h
