"""Encoder–decoder translation models for ``seqbench translate``, on this project's kernels or their
PyTorch references (``impl="kernels"`` or ``"torch"``, same parameters, same state dicts).

Every model embeds both sides at width d (the target embedding tied to the output layer) and has

- ``forward(src, src_len, tgt_in) -> logits (B, T, V)``: teacher forcing;
- ``encode(src, src_len) -> memory`` and ``step(memory, state, y_prev) -> (logits (B, V), state, weights)``:
  one decoder step, for greedy decoding; ``weights`` (B, S) are the step's attention over the source
  (None for ``encdec``).

The models (§1.6–1.7 of the chapter):

- ``encdec``: Sutskever et al.'s LSTM encoder and decoder; the decoder starts from the encoder's final
  (h, c) and sees nothing else of the source: the bottleneck.
- ``bahdanau``: a bidirectional LSTM encoder (d/2 per direction) and an LSTM decoder whose step first
  scores the previous state against every encoder state with the additive score vᵀ tanh(W_q s + W_k h),
  then feeds the context into the cell (``kernels.additive_attention`` at Nq = 1, the decoder-step tile;
  ``kernels.lstm.lstm_cell``).  Teacher forcing runs the same step T times.
- ``luong``: the same encoder; the decoder LSTM runs first (one fused layer over T: no input feeding),
  then the general score hᵀ W s attends from every decoder state at once (``kernels.additive_attention.
  luong_attention``, on the flash-attention kernel with the source's key mask), and tanh(W_c [c; h])
  feeds the output layer.
- ``transformer``: pre-norm encoder and decoder blocks with d/64 heads (at least one), causal
  self-attention in the decoder and cross-attention with the source's key mask (``kernels.attention``).
  A decoder step reruns the decoder over the prefix (no cache: the step equals the full forward).

The LSTM and additive kernels do not follow autocast, so under autocast their inputs and weights are
cast to the autocast dtype here (the fp32 parameters stay the master copy), as ``bench.train.lm`` does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.train.lm import closest_width, compute_dtype, sinusoids
from bench.translate.data import BOS, EOS, PAD

MODELS = ("encdec", "bahdanau", "luong", "transformer")
IMPLS = ("kernels", "torch")


def _cast(dtype, *ts):
    return [None if t is None else t.to(dtype) for t in ts]


def _lstm(d_in: int, d: int, layers: int, impl: str, bidirectional: bool = False) -> nn.Module:
    if impl == "torch":
        return nn.LSTM(d_in, d, layers, batch_first=True, bidirectional=bidirectional)
    from kernels.lstm import FusedLSTM
    return FusedLSTM(d_in, d, layers, batch_first=True, bidirectional=bidirectional)


def _run_lstm(rnn: nn.Module, impl: str, x, hx=None):
    """``rnn(x, hx)``; on the kernels, in x's compute dtype (parameters and states cast, gradients flowing
    back to the fp32 parameters)."""
    if impl == "torch":
        return rnn(x, hx)
    dtype = compute_dtype(x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x)
    params = {k: v.to(dtype) for k, v in rnn.named_parameters()}
    if isinstance(x, nn.utils.rnn.PackedSequence):
        x = nn.utils.rnn.PackedSequence(x.data.to(dtype), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    else:
        x = x.to(dtype)
    hx = None if hx is None else tuple(h.to(dtype) for h in hx)
    return torch.func.functional_call(rnn, params, (x, hx))


def _packed(x, src_len):
    return nn.utils.rnn.pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)


class Seq2Seq(nn.Module):
    """The frame every model shares: source and target embeddings, the output layer tied to the target's."""

    name = ""

    def __init__(self, src_vocab: int, tgt_vocab: int, d: int, layers: int, impl: str):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl, self.d, self.layers = impl, d, layers
        self.src_embed = nn.Embedding(src_vocab, d, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, d, padding_idx=PAD)
        for e in (self.src_embed, self.tgt_embed):
            nn.init.normal_(e.weight, std=d ** -0.5)

    def logits(self, h):
        return F.linear(h, self.tgt_embed.weight)

    def forward(self, src, src_len, tgt_in):
        raise NotImplementedError

    def encode(self, src, src_len) -> dict:
        raise NotImplementedError

    def step(self, memory: dict, state, y_prev, weights: bool = False):
        raise NotImplementedError


class EncDec(Seq2Seq):
    name = "encdec"

    def __init__(self, src_vocab, tgt_vocab, d, layers, impl):
        super().__init__(src_vocab, tgt_vocab, d, layers, impl)
        self.encoder = _lstm(d, d, layers, impl)
        self.decoder = _lstm(d, d, layers, impl)

    def encode(self, src, src_len):
        _, (h, c) = _run_lstm(self.encoder, self.impl, _packed(self.src_embed(src), src_len))
        return {"state": (h, c)}

    def forward(self, src, src_len, tgt_in):
        out, _ = _run_lstm(self.decoder, self.impl, self.tgt_embed(tgt_in), self.encode(src, src_len)["state"])
        return self.logits(out)

    def step(self, memory, state, y_prev, weights: bool = False):
        state = memory["state"] if state is None else state
        out, state = _run_lstm(self.decoder, self.impl, self.tgt_embed(y_prev)[:, None], state)
        return self.logits(out[:, 0]), state, None


class _Attentive(Seq2Seq):
    """A bidirectional LSTM encoder (d/2 per direction: the memory is d wide) and a bridge to the
    decoder's first state, tanh(W [h→_last; h←_first]) in every layer, c = 0 (Bahdanau's s₀)."""

    def __init__(self, src_vocab, tgt_vocab, d, layers, impl):
        super().__init__(src_vocab, tgt_vocab, d, layers, impl)
        if d % 2:
            raise ValueError(f"an attention model's d_model must be even (d/2 per encoder direction), got {d}")
        self.encoder = _lstm(d, d // 2, layers, impl, bidirectional=True)
        self.bridge = nn.Linear(d, d)

    def encode(self, src, src_len):
        out, (h, _) = _run_lstm(self.encoder, self.impl, _packed(self.src_embed(src), src_len))
        mem, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        s0 = torch.tanh(self.bridge(torch.cat([h[-2], h[-1]], -1).to(mem.dtype)))
        h0 = s0[None].expand(self.layers, -1, -1).contiguous()
        mask = torch.arange(src.shape[1], device=src.device)[None] < src_len.to(src.device)[:, None]
        return {"memory": mem, "mask": mask, "state": (h0, torch.zeros_like(h0))}


class Bahdanau(_Attentive):
    name = "bahdanau"

    def __init__(self, src_vocab, tgt_vocab, d, layers, impl):
        super().__init__(src_vocab, tgt_vocab, d, layers, impl)
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, d)                    # its bias is the score's bias
        self.v = nn.Parameter(torch.empty(d).uniform_(-d ** -0.5, d ** -0.5))
        self.cells = nn.ModuleList(nn.LSTMCell(2 * d if i == 0 else d, d) for i in range(layers))
        self.out = nn.Linear(2 * d, d)

    def _attend(self, s, memory, mask, weights: bool):
        dtype = compute_dtype(s)
        args = _cast(dtype, s[:, None], memory)
        w_q, w_k, v, bias = _cast(dtype, self.w_q.weight, self.w_k.weight, self.v, self.w_k.bias)
        if self.impl == "torch":
            from reference.additive_attention import additive_attention
        else:
            from kernels.additive_attention import additive_attention
        r = additive_attention(*args, w_q=w_q, w_k=w_k, v=v, bias=bias, mask=mask, return_weights=weights)
        return (r[0][:, 0], r[1][:, 0]) if weights else (r[:, 0], None)

    def _cell(self, i, x, h, c):
        cell = self.cells[i]
        if self.impl == "torch":
            return cell(x, (h, c))
        from kernels.lstm import lstm_cell
        dtype = compute_dtype(x)
        return lstm_cell(*_cast(dtype, x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))

    def step(self, memory, state, y_prev, weights: bool = False):
        h, c = memory["state"] if state is None else state
        ctx, w = self._attend(h[-1], memory["memory"], memory["mask"], weights)
        x = torch.cat([self.tgt_embed(y_prev).to(ctx.dtype), ctx], -1)
        hs, cs = [], []
        for i in range(self.layers):
            hi, ci = self._cell(i, x, h[i], c[i])
            hs.append(hi)
            cs.append(ci)
            x = hi
        out = torch.tanh(self.out(torch.cat([x, ctx.to(x.dtype)], -1)))
        return self.logits(out), (torch.stack(hs), torch.stack(cs)), w

    def forward(self, src, src_len, tgt_in):
        memory, state, outs = self.encode(src, src_len), None, []
        for t in range(tgt_in.shape[1]):
            logits, state, _ = self.step(memory, state, tgt_in[:, t])
            outs.append(logits)
        return torch.stack(outs, 1)


class Luong(_Attentive):
    name = "luong"

    def __init__(self, src_vocab, tgt_vocab, d, layers, impl):
        super().__init__(src_vocab, tgt_vocab, d, layers, impl)
        self.decoder = _lstm(d, d, layers, impl)
        self.w_score = nn.Linear(d, d, bias=False)    # general: hᵀ W s
        self.combine = nn.Linear(2 * d, d)

    def _attend(self, h, memory, mask):
        dtype = compute_dtype(h)
        q, keys, w = _cast(dtype, h, memory, self.w_score.weight)
        if self.impl == "torch":
            from reference.additive_attention import luong_attention
        else:
            from kernels.additive_attention import luong_attention
        return luong_attention(q, keys, score="general", weight=w, mask=mask)

    def _out(self, h, ctx):
        return self.logits(torch.tanh(self.combine(torch.cat([ctx.to(h.dtype), h], -1))))

    def forward(self, src, src_len, tgt_in):
        m = self.encode(src, src_len)
        h, _ = _run_lstm(self.decoder, self.impl, self.tgt_embed(tgt_in), m["state"])
        return self._out(h, self._attend(h, m["memory"], m["mask"]))

    def step(self, memory, state, y_prev, weights: bool = False):
        state = memory["state"] if state is None else state
        h, state = _run_lstm(self.decoder, self.impl, self.tgt_embed(y_prev)[:, None], state)
        ctx = self._attend(h, memory["memory"], memory["mask"])
        w = None
        if weights:                      # the step's weights, for the alignment figure
            with torch.no_grad():
                s = (h.float() @ self.w_score.weight.float().t()) @ memory["memory"].float().transpose(1, 2)
                w = torch.softmax(s.masked_fill(~memory["mask"][:, None], float("-inf")), -1)[:, 0]
        return self._out(h, ctx)[:, 0], state, w


class _Block(nn.Module):
    """A pre-norm Transformer layer: self-attention (causal in the decoder), cross-attention in the
    decoder, and a 4d GELU MLP, each x + f(LN(x))."""

    def __init__(self, d: int, heads: int, cross: bool):
        super().__init__()
        self.heads, self.record, self.weights = heads, False, None
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        if cross:
            self.ln_x, self.q_x, self.kv_x, self.proj_x = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, 2 * d), \
                nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def _heads(self, t):
        B, T, D = t.shape
        return t.view(B, T, self.heads, D // self.heads).transpose(1, 2)

    def forward(self, x, attend, mask, memory=None, causal: bool = False):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        a = attend(self._heads(q), self._heads(k), self._heads(v), causal, None if causal else mask)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        if memory is not None:
            k, v = self.kv_x(memory).chunk(2, -1)
            q = self._heads(self.q_x(self.ln_x(x)))
            k, v = self._heads(k), self._heads(v)
            if self.record:              # the weights, for the alignment figure (the kernel does not return them)
                with torch.no_grad():
                    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
                    self.weights = torch.softmax(s.masked_fill(~mask[:, None, None], float("-inf")), -1)
            a = attend(q, k, v, False, mask)
            x = x + self.proj_x(a.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class Transformer(Seq2Seq):
    name = "transformer"

    def __init__(self, src_vocab, tgt_vocab, d, layers, impl):
        super().__init__(src_vocab, tgt_vocab, d, layers, impl)
        self.n_heads = max(1, d // 64)
        if d % self.n_heads:
            raise ValueError(f"the transformer's d_model must divide into {self.n_heads} heads, got {d}")
        self.enc = nn.ModuleList(_Block(d, self.n_heads, cross=False) for _ in range(layers))
        self.dec = nn.ModuleList(_Block(d, self.n_heads, cross=True) for _ in range(layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(d), nn.LayerNorm(d)

    def _attend(self, q, k, v, causal, mask):
        if self.impl == "torch":
            m = None if mask is None else mask[:, None, None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal and m is None)
        from kernels.attention import attention
        return attention(q, k, v, causal=causal, key_mask=mask)

    def _embed(self, emb, ids):
        x = emb(ids) * math.sqrt(self.d)
        return x + sinusoids(ids.shape[1], self.d, ids.device).to(x.dtype)

    def encode(self, src, src_len):
        mask = torch.arange(src.shape[1], device=src.device)[None] < src_len.to(src.device)[:, None]
        x = self._embed(self.src_embed, src)
        for b in self.enc:
            x = b(x, self._attend, mask)
        return {"memory": self.enc_norm(x), "mask": mask}

    def _decode(self, m, tgt_in):
        x = self._embed(self.tgt_embed, tgt_in)
        for b in self.dec:
            x = b(x, self._attend, m["mask"], memory=m["memory"], causal=True)
        return self.logits(self.dec_norm(x))

    def forward(self, src, src_len, tgt_in):
        return self._decode(self.encode(src, src_len), tgt_in)

    def step(self, memory, state, y_prev, weights: bool = False):
        prefix = y_prev[:, None] if state is None else torch.cat([state, y_prev[:, None]], 1)
        last = self.dec[-1]
        last.record = weights
        try:
            logits = self._decode(memory, prefix)[:, -1]
        finally:
            last.record = False
        # the last layer's cross-attention from this step's position, heads averaged
        return logits, prefix, last.weights[:, :, -1].mean(1) if weights else None


CLASSES = {c.name: c for c in (EncDec, Bahdanau, Luong, Transformer)}


def build(model: str, src_vocab: int, tgt_vocab: int, d: int, layers: int, impl: str) -> Seq2Seq:
    if model not in CLASSES:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    return CLASSES[model](src_vocab, tgt_vocab, d, layers, impl)


def count_params(model: str, src_vocab: int, tgt_vocab: int, d: int, layers: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build(model, src_vocab, tgt_vocab, d, layers, "torch").parameters())


def match_widths(models, src_vocab: int, tgt_vocab: int, d_model: int, layers: int,
                 tolerance: float = 0.10) -> dict[str, int]:
    """Each model's width: the transformer's is ``d_model``; the others' are the even widths whose
    parameter counts come closest to it (``bench.train.lm.closest_width``)."""
    target = count_params("transformer", src_vocab, tgt_vocab, d_model, layers)
    widths = {}
    for m in models:
        if m == "transformer":
            widths[m] = d_model
            continue
        # bisection over half-widths: the attention models' encoders take d/2 per direction
        count = lambda half, m=m: count_params(m, src_vocab, tgt_vocab, 2 * half, layers)  # noqa: E731
        half = closest_width(count, target, 2 * d_model, step=4, tolerance=tolerance)
        best, off = 2 * half, count(half) / target - 1
        if abs(off) > tolerance:
            raise ValueError(f"model {m!r} cannot match the transformer's {target:,} parameters within "
                             f"{tolerance:.0%} (closest width {best} is off by {off:+.1%})")
        widths[m] = best
    return widths


@torch.no_grad()
def greedy(model: Seq2Seq, src, src_len, max_len: int, weights: bool = False):
    """Greedy decoding: (tokens (B, ≤ max_len) with PAD after each row's EOS, attention (B, T, S) or None).
    Stops when every row has produced EOS."""
    memory = model.encode(src, src_len)
    B = src.shape[0]
    y = torch.full((B,), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    state, out, att = None, [], []
    for _ in range(max_len):
        logits, state, w = model.step(memory, state, y, weights=weights)
        y = logits.argmax(-1).masked_fill(done, PAD)
        out.append(y)
        if weights and w is not None:
            att.append(w.float())
        done |= y == EOS
        if bool(done.all()):
            break
    tokens = torch.stack(out, 1)
    return tokens, (torch.stack(att, 1) if att else None)
