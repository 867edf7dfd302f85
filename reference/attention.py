"""PyTorch references for scaled dot-product attention.

``naive_attention`` is the textbook formula with the Nq×Nk matrix materialised, in whatever
dtype it is given (the version users write, and the float64 ground truth of the tests).
``sdpa`` is ``F.scaled_dot_product_attention`` pinned to one backend by name.  ``flex`` is PyTorch's
FlexAttention, compiled, with causality and a key mask as a BlockMask: what a user would pick instead of a
custom attention kernel.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def causal_mask(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """SDPA's is_causal mask: query i sees key j iff j <= i (top-left aligned)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def naive_attention(q, k, v, causal: bool = False, scale: float | None = None, key_mask=None) -> torch.Tensor:
    """softmax(scale · Q Kᵀ) V computed in the inputs' dtype; GQA by repeating k/v heads.  ``key_mask``
    (B, Nk) bool, True = attend; a query left with no key gets zeros (SDPA's safe softmax)."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
    if key_mask is not None:
        s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        p = torch.softmax(s, dim=-1)
        return torch.where(torch.isinf(s).all(-1, keepdim=True), 0.0, p).to(v.dtype) @ v
    return torch.softmax(s, dim=-1) @ v


def sdpa(q, k, v, causal: bool = False, scale: float | None = None, backend: str | None = None) -> torch.Tensor:
    """F.scaled_dot_product_attention restricted to ``backend`` (flash, efficient, cudnn, math) or PyTorch's choice."""
    if backend is not None and backend not in SDPA_BACKENDS:
        raise ValueError(f"backend must be one of {sorted(SDPA_BACKENDS)} or None, got {backend!r}")
    ctx = sdpa_kernel(SDPA_BACKENDS[backend]) if backend else contextlib.nullcontext()
    with ctx:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])


def available_backends(q, k, v, causal: bool = False) -> list[str]:
    """The SDPA backends that accept these inputs on this machine (each tried once)."""
    found = []
    for name in SDPA_BACKENDS:
        try:
            sdpa(q, k, v, causal=causal, backend=name)
        except RuntimeError:
            continue
        found.append(name)
    return found


_FLEX = None


def flex(q, k, v, causal: bool = False, scale: float | None = None, key_mask=None) -> torch.Tensor:
    """torch.nn.attention.flex_attention under torch.compile (its fused kernels: Triton on a GPU, C++ on a CPU),
    causal through a mask_mod and ``key_mask`` (B, Nk) bool through a BlockMask.  A query with no key left
    gets zeros, as with ``naive_attention``."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    global _FLEX
    if _FLEX is None:
        _FLEX = torch.compile(flex_attention, dynamic=False)      # static shapes: each shape its own kernel
    block_mask = None
    if causal or key_mask is not None:
        def mask_mod(b, h, q_idx, kv_idx):
            keep = kv_idx <= q_idx if causal else kv_idx >= 0
            return keep & key_mask[b, kv_idx] if key_mask is not None else keep
        block_mask = create_block_mask(mask_mod, key_mask.shape[0] if key_mask is not None else None, None,
                                       q.shape[2], k.shape[2], device=q.device)
    return _FLEX(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
