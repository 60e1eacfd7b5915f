import math

import pytest
import torch
from torch import nn

from psx.errors import PsxError
from psx.models.attention import (CausalSelfAttention, TransformerBlock, attention_parameter_count,
                                  block_parameter_count)


def reference_attention(attention: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Grouped attention written out: each query head gets its group's keys and values repeated
    explicitly, then softmax(q k^T / sqrt(d) + causal mask) v, per head, with no fused kernel."""
    length, batch, hidden = x.shape
    heads, kv_heads, d = attention.heads, attention.kv_heads, attention.head_size
    projected = x @ attention.in_proj_weight.t() + attention.in_proj_bias
    q, k, v = projected.split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
    q = q.reshape(length, batch, heads, d)
    group = heads // kv_heads
    k = k.reshape(length, batch, kv_heads, d).repeat_interleave(group, dim=2)  # head h reads kv head h // group
    v = v.reshape(length, batch, kv_heads, d).repeat_interleave(group, dim=2)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    out = torch.empty(length, batch, heads, d, dtype=x.dtype)
    for b in range(batch):
        for h in range(heads):
            scores = q[:, b, h] @ k[:, b, h].t() / math.sqrt(d)
            weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            out[:, b, h] = weights @ v[:, b, h]
    return attention.out_proj(out.reshape(length, batch, hidden))


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1), (6, 3), (6, 2)])
def test_equals_the_reference_that_repeats_keys_and_values_per_head(heads, kv_heads):
    torch.manual_seed(0)
    attention = CausalSelfAttention(24, heads, kv_heads).double()
    with torch.no_grad():
        attention.in_proj_bias.normal_()  # zero at init: make the bias count in the comparison
    x = torch.randn(7, 3, 24, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, expected = attention(x), reference_attention(attention, x_ref)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad_out)[0], torch.autograd.grad(expected, x_ref, grad_out)[0],
                               rtol=1e-10, atol=1e-10)


def test_attention_is_causal():
    torch.manual_seed(1)
    attention = CausalSelfAttention(16, 4, 2)
    x = torch.randn(6, 2, 16)
    changed = x.clone()
    changed[4:] = torch.randn(2, 2, 16)  # only later positions change
    torch.testing.assert_close(attention(changed)[:4], attention(x)[:4])


@pytest.mark.parametrize("hidden,heads,kv_heads", [(64, 8, 8), (64, 8, 2), (64, 8, 1), (200, 4, 2)])
def test_parameter_counts_are_exact(hidden, heads, kv_heads):
    attention = CausalSelfAttention(hidden, heads, kv_heads)
    d = hidden // heads
    counted = sum(p.numel() for p in attention.parameters())
    by_hand = hidden * (heads * d) + 2 * hidden * (kv_heads * d) + (heads + 2 * kv_heads) * d + hidden * hidden + hidden
    assert counted == by_hand == attention_parameter_count(hidden, heads, kv_heads)
    assert sum(p.numel() for p in TransformerBlock(hidden, heads, 3 * hidden, 0.1, kv_heads).parameters()) == \
        block_parameter_count(hidden, heads, 3 * hidden, kv_heads)
    if kv_heads == heads:  # as many as PyTorch's own multi-head attention
        assert counted == sum(p.numel() for p in nn.MultiheadAttention(hidden, heads).parameters())


@pytest.mark.parametrize("heads,kv_heads", [(8, 3), (8, 0), (4, 8)])
def test_kv_heads_must_divide_heads(heads, kv_heads):
    with pytest.raises(PsxError, match="kv_heads"):
        CausalSelfAttention(32, heads, kv_heads)
    with pytest.raises(PsxError, match="divisible"):
        CausalSelfAttention(30, 4, 4)


@pytest.mark.parametrize("training", [True, False])
def test_with_kv_heads_equal_heads_the_block_is_pytorchs_encoder_layer_bit_for_bit(training):
    """Same seed -> same initial weights, and the same outputs and gradients, exactly (dropout included):
    TransformerBlock can replace nn.TransformerEncoderLayer(norm_first=True) in the LM with identical runs."""
    torch.manual_seed(2)
    theirs = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, norm_first=True)
    torch.manual_seed(2)
    ours = TransformerBlock(32, 4, 64, dropout=0.1, kv_heads=4)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert list(theirs_state) == list(ours_state)
    assert all(torch.equal(theirs_state[name], ours_state[name]) for name in theirs_state)
    theirs.train(training), ours.train(training)
    x = torch.randn(9, 3, 32)
    mask = nn.Transformer.generate_square_subsequent_mask(9)
    torch.manual_seed(3)
    out_theirs = theirs(x, src_mask=mask, is_causal=True)
    torch.manual_seed(3)
    out_ours = ours(x, src_mask=mask, is_causal=True)
    assert torch.equal(out_ours, out_theirs)
    if not training:  # evaluation runs under no_grad, where PyTorch has fast paths of its own
        with torch.no_grad():
            assert torch.equal(ours(x, src_mask=mask, is_causal=True), theirs(x, src_mask=mask, is_causal=True))
    out_theirs.square().sum().backward()
    out_ours.square().sum().backward()
    theirs_grads = dict(theirs.named_parameters())
    assert all(torch.equal(p.grad, theirs_grads[name].grad) for name, p in ours.named_parameters())
