"""PyTorch references for the linear scan, minGRU and minLSTM: the recurrences as plain sequential loops."""
from __future__ import annotations

import torch


def linear_scan(a, b, h0=None):
    """h_t = a_t ∘ h_{t−1} + b_t, one step at a time; a, b (B, T, D), h0 (B, D) or None."""
    h = torch.zeros_like(a[:, 0]) if h0 is None else h0
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def _linear(x, w, b):
    return x @ w.t() + (b if b is not None else 0)


def min_gru(x, w_z, w_h, b_z=None, b_h=None, h0=None, scan=None):
    """Feng et al. 2024, minGRU: z = σ(Linear_z(x)), h̃ = Linear_h(x), h_t = (1 − z_t) h_{t−1} + z_t h̃_t.
    ``scan``: the recurrence (default the sequential ``linear_scan``)."""
    z, h_tilde = torch.sigmoid(_linear(x, w_z, b_z)), _linear(x, w_h, b_h)
    return (scan or linear_scan)(1 - z, z * h_tilde, h0)


def min_lstm(x, w_f, w_i, w_h, b_f=None, b_i=None, b_h=None, h0=None, scan=None):
    """Feng et al. 2024, minLSTM: f, i = σ(·), h̃ = Linear_h(x), normalised f' = f/(f+i), i' = i/(f+i)."""
    f, i = torch.sigmoid(_linear(x, w_f, b_f)), torch.sigmoid(_linear(x, w_i, b_i))
    return (scan or linear_scan)(f / (f + i), i / (f + i) * _linear(x, w_h, b_h), h0)


def linear_scan_doubling(a, b, h0=None):
    """The same recurrence as a parallel scan in plain torch ops (Hillis–Steele doubling): ⌈log₂T⌉ rounds of
    whole-sequence elementwise ops, O(T log T) work, no dependent per-step loop."""
    if h0 is not None:                      # fold h0 into the first step: h_0 = a_0 h0 + b_0
        b = torch.cat([(a[:, :1] * h0[:, None] + b[:, :1]), b[:, 1:]], 1)
    k = 1
    while k < a.shape[1]:
        b = torch.cat([b[:, :k], a[:, k:] * b[:, :-k] + b[:, k:]], 1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], 1)
        k *= 2
    return b
