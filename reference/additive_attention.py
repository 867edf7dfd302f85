"""PyTorch references for kernels.additive_attention: the scores materialised as the textbook writes them."""
from __future__ import annotations

import torch


def additive_scores(query, keys, w_q, w_k, v, bias=None):
    """s[b, i, j] = vᵀ tanh(W_q q_i + W_k k_j + bias): the (B, Nq, Nk, A) tensor built in full."""
    pq = query @ w_q.t()
    if bias is not None:
        pq = pq + bias
    pk = keys @ w_k.t()
    return torch.tanh(pq[:, :, None, :] + pk[:, None, :, :]) @ v


def _softmax_context(s, values, mask):
    if mask is not None:
        s = s.masked_fill(~mask[:, None, :], float("-inf"))
    w = torch.softmax(s, -1)
    return w @ values, w


def additive_attention(query, keys, values=None, *, w_q, w_k, v, bias=None, mask=None, return_weights=False):
    """Bahdanau attention in plain torch ops; same signature and result as the kernel."""
    values = keys if values is None else values
    out, w = _softmax_context(additive_scores(query, keys, w_q, w_k, v, bias), values, mask)
    return (out, w) if return_weights else out


def luong_attention(query, keys, values=None, *, score="dot", weight=None, v=None, mask=None):
    """Luong's dot (hᵀs), general (hᵀWs) and concat (vᵀ tanh(W[s; h])) scores, in plain torch ops."""
    values = keys if values is None else values
    if score == "dot":
        s = query @ keys.transpose(1, 2)
    elif score == "general":
        s = (query @ weight.t()) @ keys.transpose(1, 2)
    elif score == "concat":
        Dq = query.shape[2]
        s = additive_scores(query, keys, weight[:, :Dq], weight[:, Dq:], v)
    else:
        raise ValueError(f"unknown score {score!r}")
    return _softmax_context(s, values, mask)[0]
