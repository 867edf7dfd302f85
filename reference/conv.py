"""PyTorch reference for kernels.conv: ``F.conv1d`` then ``F.glu`` on channels-last sequences, and the
ConvS2S residual block built on it."""
from __future__ import annotations

import math

import torch.nn.functional as F


def glu_conv1d(x, weight, bias=None, *, causal: bool = True):
    """x (B, T, C_in), weight (2·C_out, C_in, K): GLU of the conv with K − 1 zeros on the left (causal) or
    ``padding="same"``; returns (B, T, C_out)."""
    K = weight.shape[2]
    left = K - 1 if causal else (K - 1) // 2
    xt = F.pad(x.transpose(1, 2), (left, K - 1 - left))
    return F.glu(F.conv1d(xt, weight, bias), dim=1).transpose(1, 2)


def convs2s_block(x, weight, bias=None, *, causal: bool = True):
    """(glu_conv1d(x) + x) · √0.5, ConvS2S's residual block."""
    return (glu_conv1d(x, weight, bias, causal=causal) + x) * math.sqrt(0.5)
