"""PyTorch references for the Elman RNN (textbook §1.2): h' = f(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)."""
from __future__ import annotations

import torch


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """One step in plain torch ops (``nn.RNNCell`` semantics)."""
    h = torch.zeros(x.shape[0], w_hh.shape[1], dtype=x.dtype, device=x.device) if h is None else h
    a = x @ w_ih.t() + (b_ih if b_ih is not None else 0) + h @ w_hh.t() + (b_hh if b_hh is not None else 0)
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


def rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity: str = "tanh", batch_first: bool = False):
    """One layer as the naive per-step loop: returns (out, h_n)."""
    if batch_first:
        x = x.transpose(0, 1)
    h, outs = h0, []
    for t in range(x.shape[0]):
        h = rnn_cell(x[t], h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        outs.append(h)
    out = torch.stack(outs)
    return (out.transpose(0, 1) if batch_first else out), h
