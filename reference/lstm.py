"""PyTorch references for the LSTM: the textbook equations step by step (the naive loop users
write), and ``nn.LSTMCell`` / ``nn.LSTM`` (cuDNN on a GPU) driven with the same weights."""
from __future__ import annotations

import torch
from torch import nn


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One step in plain torch ops, gate order (i, f, g, o); h, c None mean zeros."""
    h = torch.zeros(x.shape[0], w_hh.shape[1], dtype=x.dtype, device=x.device) if h is None else h
    c = torch.zeros_like(h) if c is None else c
    a = x @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        a = a + b_ih
    if b_hh is not None:
        a = a + b_hh
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c1 = f * c + i * g
    return o * torch.tanh(c1), c1


def lstm(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_first: bool = False):
    """One layer as the naive per-step loop: returns (out, (h_n, c_n))."""
    if batch_first:
        x = x.transpose(0, 1)
    h, c = (None, None) if hx is None else hx
    outs = []
    for t in range(x.shape[0]):
        h, c = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        outs.append(h)
    out = torch.stack(outs)
    return (out.transpose(0, 1) if batch_first else out), (h, c)


def torch_lstm(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_first: bool = False):
    """The same layer through ``nn.LSTM`` (cuDNN on a GPU), for identical weights."""
    hidden = w_hh.shape[1]
    m = nn.LSTM(w_ih.shape[1], hidden, bias=b_ih is not None, batch_first=batch_first,
                device=x.device, dtype=x.dtype)
    with torch.no_grad():
        m.weight_ih_l0.copy_(w_ih)
        m.weight_hh_l0.copy_(w_hh)
        if b_ih is not None:
            m.bias_ih_l0.copy_(b_ih)
            m.bias_hh_l0.copy_(b_hh if b_hh is not None else torch.zeros_like(b_ih))
    state = None if hx is None else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
    out, (h, c) = m(x, state)
    return out, (h[0], c[0])
