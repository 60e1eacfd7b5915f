"""Causal self-attention with keys and values shared across groups of heads, and the transformer block
psx's language model builds from it.

`kv_heads` sets how many key/value heads the `heads` query heads read: kv_heads = heads is ordinary
multi-head attention, 1 < kv_heads < heads grouped-query attention (Ainslie et al. 2023: query head
h reads key/value head h // (heads / kv_heads)), kv_heads = 1 multi-query attention (Shazeer 2019).
The projections are packed in one matrix, [queries; keys; values], of ((heads + 2 kv_heads) x
head_size, hidden) rows, named as nn.MultiheadAttention names its own (in_proj_weight, in_proj_bias,
out_proj). With kv_heads = heads, TransformerBlock has nn.TransformerEncoderLayer's (pre-norm, ReLU)
parameter names and shapes, draws its initial values in the same order, and computes the same
operations in the same order: it replaces that layer with identical results, and loads its checkpoints.

Activations are sequence-first, (T, B, hidden), as in psx's language models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psx.errors import PsxError


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, heads: int, kv_heads: int | None = None, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        if hidden_size % heads:
            raise PsxError(f"attention: hidden_size {hidden_size} is not divisible by heads {heads}")
        if kv_heads < 1 or heads % kv_heads:
            raise PsxError(f"attention: kv_heads {kv_heads} must divide heads {heads} (e.g. {heads}, 1, or a divisor between)")
        self.hidden_size, self.heads, self.kv_heads, self.dropout = hidden_size, heads, kv_heads, dropout
        self.head_size = hidden_size // heads
        rows = (heads + 2 * kv_heads) * self.head_size
        # Created and initialised in nn.MultiheadAttention's order, so that the same seed gives the same weights.
        self.in_proj_weight = nn.Parameter(torch.empty(rows, hidden_size))
        self.in_proj_bias = nn.Parameter(torch.empty(rows)) if bias else None
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        self.in_proj_lora = None  # set by psx.models.adapters.add_lora

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        projected = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return projected if self.in_proj_lora is None else projected + self.in_proj_lora(x)

    def split_heads(self, projected: torch.Tensor):
        """(T, B, rows) -> queries (B, heads, T, d), keys and values (B, kv_heads, T, d)."""
        length, batch = projected.shape[:2]
        q_size, kv_size = self.heads * self.head_size, self.kv_heads * self.head_size
        parts = projected.split([q_size, kv_size, kv_size], dim=-1)
        # Each part made contiguous as (T, B, part), then viewed per head: nn.MultiheadAttention's layout.
        return [part.contiguous().view(length, batch, -1, self.head_size).permute(1, 2, 0, 3) for part in parts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, hidden) -> (T, B, hidden), causal
        length, batch = x.shape[:2]
        q, k, v = self.split_heads(self.project_in(x))
        grouped = self.kv_heads != self.heads
        out = F.scaled_dot_product_attention(q, k, v, None, self.dropout if self.training else 0.0,
                                             is_causal=True, enable_gqa=grouped)
        out = out.permute(2, 0, 1, 3).reshape(length * batch, self.hidden_size)
        return self.out_proj(out).view(length, batch, self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, heads={self.heads}, kv_heads={self.kv_heads}, dropout={self.dropout}"


def attention_parameter_count(hidden_size: int, heads: int, kv_heads: int, bias: bool = True) -> int:
    """Exact: the packed in-projection's (heads + 2 kv_heads) x head_size rows, and the output projection."""
    rows = (heads + 2 * kv_heads) * (hidden_size // heads)
    return rows * hidden_size + hidden_size * hidden_size + (rows + hidden_size if bias else 0)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm1(x)), then x + feedforward(norm2(x)), with ReLU and dropout
    where nn.TransformerEncoderLayer(norm_first=True) has them."""

    def __init__(self, hidden_size: int, heads: int, feedforward_size: int, dropout: float = 0.1,
                 kv_heads: int | None = None):
        super().__init__()
        self.self_attn = CausalSelfAttention(hidden_size, heads, kv_heads, dropout)
        self.linear1 = nn.Linear(hidden_size, feedforward_size)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(feedforward_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor | None = None, is_causal: bool = True) -> torch.Tensor:
        # The signature of nn.TransformerEncoderLayer's call in psx's LM. Attention here is always causal:
        # like nn.MultiheadAttention given is_causal=True, it lets SDPA apply the causal mask and does
        # not read src_mask.
        if not is_causal:
            raise ValueError("TransformerBlock's attention is causal; call it with is_causal=True")
        x = x + self.dropout1(self.self_attn(self.norm1(x)))
        return x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(self.norm2(x))))))


def block_parameter_count(hidden_size: int, heads: int, feedforward_size: int, kv_heads: int) -> int:
    feedforward = 2 * hidden_size * feedforward_size + feedforward_size + hidden_size
    return attention_parameter_count(hidden_size, heads, kv_heads) + feedforward + 4 * hidden_size
