"""PyTorch reference for kernels.lstm_persistent: a (multi-head) LSTM layer as the textbook loop.

With ``heads > 1`` the recurrent matrix is block-diagonal, FlashRNN's layout: ``w_hh`` (heads, 4·DH, DH)
expands to the (4H, H) matrix whose head-n block maps head n's units to head n's gates only.
"""
from __future__ import annotations

from reference.lstm import lstm


def lstm_persistent(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, heads: int = 1, batch_first: bool = False):
    """``kernels.lstm_persistent``'s semantics in plain torch ops: returns (out, (h_n, c_n))."""
    return lstm(x, hx, w_ih, block_diagonal(w_hh) if heads > 1 else w_hh, b_ih, b_hh, batch_first=batch_first)


def block_diagonal(w_hh_heads):
    """The (4H, H) recurrent matrix of a multi-head LSTM whose w_hh is (heads, 4·DH, DH): head n's rows
    g·DH + j go to gate row g·H + n·DH + j, its columns to n·DH … n·DH + DH − 1, all else zero."""
    heads, rows, dh = w_hh_heads.shape
    H = heads * dh
    full = w_hh_heads.new_zeros(4 * H, H)
    for n in range(heads):
        for g in range(4):
            full[g * H + n * dh: g * H + (n + 1) * dh, n * dh:(n + 1) * dh] = w_hh_heads[n, g * dh:(g + 1) * dh]
    return full
