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


def min_gru(x, w_z, w_h, b_z=None, b_h=None, h0=None):
    """Feng et al. 2024, minGRU: z = σ(Linear_z(x)), h̃ = Linear_h(x), h_t = (1 − z_t) h_{t−1} + z_t h̃_t."""
    z, h_tilde = torch.sigmoid(_linear(x, w_z, b_z)), _linear(x, w_h, b_h)
    return linear_scan(1 - z, z * h_tilde, h0)


def min_lstm(x, w_f, w_i, w_h, b_f=None, b_i=None, b_h=None, h0=None):
    """Feng et al. 2024, minLSTM: f, i = σ(·), h̃ = Linear_h(x), normalised f' = f/(f+i), i' = i/(f+i)."""
    f, i = torch.sigmoid(_linear(x, w_f, b_f)), torch.sigmoid(_linear(x, w_i, b_i))
    return linear_scan(f / (f + i), i / (f + i) * _linear(x, w_h, b_h), h0)
