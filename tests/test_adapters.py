import copy

import pytest
import torch
from torch import nn

from psx.errors import PsxError
from psx.models.adapters import (BottleneckAdapter, LoRA, LoRALinear, add_adapters, add_lora,
                                 adapter_parameter_names, freeze_all_but)
from psx.models.attention import TransformerBlock


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(10, 32)
        self.blocks = nn.ModuleList(TransformerBlock(32, 4, 64, dropout=0.0, kv_heads=2) for _ in range(2))
        self.head = nn.Linear(32, 5)

    def forward(self, x):  # (T, B, 10)
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def tiny_cnn():
    return nn.Sequential(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()), nn.MaxPool2d(2),
                         nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()), nn.Flatten(), nn.Linear(16 * 16, 10))


def test_lora_linear_is_the_linear_with_the_merged_weight():
    torch.manual_seed(0)
    base = nn.Linear(6, 4).double()
    layer = LoRALinear.from_linear(base, rank=2, alpha=8)
    assert layer.weight is base.weight and layer.bias is base.bias  # the same Parameters, same names
    with torch.no_grad():
        layer.lora.B.normal_()
    x = torch.randn(3, 6, dtype=torch.float64)
    merged = base.weight + 4.0 * layer.lora.B @ layer.lora.A  # alpha / rank = 4
    torch.testing.assert_close(layer(x), x @ merged.t() + base.bias)


def test_fresh_lora_leaves_outputs_unchanged_and_trains_only_itself():
    torch.manual_seed(1)
    model = TinyLM()
    x = torch.randn(7, 3, 10)
    before, backbone = model(x), copy.deepcopy(model.state_dict())
    wrapped = add_lora(model, ["blocks"], rank=4, alpha=8)
    assert wrapped == ["blocks.0.self_attn", "blocks.0.self_attn.out_proj", "blocks.0.linear1", "blocks.0.linear2",
                       "blocks.1.self_attn", "blocks.1.self_attn.out_proj", "blocks.1.linear1", "blocks.1.linear2"]
    assert torch.equal(model(x), before)  # B = 0: exactly the backbone
    assert all(name in model.state_dict() for name in backbone)  # backbone names unchanged: checkpoints still load
    trainable = freeze_all_but(model)
    assert trainable == adapter_parameter_names(model) and all(".lora" in n or "in_proj_lora" in n for n in trainable)
    # Per block: the packed in-projection (32 -> (4 + 2 x 2) x 8 rows), out_proj 32->32, linear1 32->64, linear2 64->32.
    per_block = 4 * (32 + 64) + 4 * (32 + 32) + 4 * (32 + 64) + 4 * (64 + 32)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * per_block
    model(x).square().mean().backward()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    optimizer.step()
    assert not torch.equal(model(x), before)  # it does learn ...
    assert all(torch.equal(model.state_dict()[n], t) for n, t in backbone.items())  # ... and the backbone stays


def test_fresh_bottleneck_adapters_leave_outputs_unchanged_on_feature_maps_and_sequences():
    torch.manual_seed(2)
    cnn = tiny_cnn()
    images = torch.randn(4, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    before = cnn(images)
    assert add_adapters(cnn, ["0", "2"], size=3, example=images, channel_dim=1) == ["0", "2"]
    assert torch.equal(cnn(images), before)
    trainable = freeze_all_but(cnn, trainable=["4"])  # adapters and the task head
    assert trainable == ["0.adapter.down.weight", "0.adapter.down.bias", "0.adapter.up.weight", "0.adapter.up.bias",
                         "2.adapter.down.weight", "2.adapter.down.bias", "2.adapter.up.weight", "2.adapter.up.bias",
                         "4.weight", "4.bias"]
    adapters = (2 * 8 * 3 + 3 + 8) + (2 * 16 * 3 + 3 + 16)
    assert sum(p.numel() for p in cnn.parameters() if p.requires_grad) == adapters + 16 * 16 * 10 + 10

    lm = TinyLM()
    tokens = torch.randn(5, 2, 10)
    before = lm(tokens)
    add_adapters(lm, ["blocks.0", "blocks.1"], size=4, example=tokens)
    assert torch.equal(lm(tokens), before)
    freeze_all_but(lm)
    assert sum(p.numel() for p in lm.parameters() if p.requires_grad) == 2 * (2 * 32 * 4 + 4 + 32)


def test_an_adapter_changes_outputs_once_trained_and_gradients_reach_only_it():
    torch.manual_seed(3)
    cnn = tiny_cnn()
    images = torch.randn(4, 1, 8, 8)
    add_adapters(cnn, ["2"], size=2, example=images, channel_dim=1)
    freeze_all_but(cnn)
    before = cnn(images).detach()
    cnn(images).sum().backward()
    assert cnn[2].adapter.up.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in cnn.named_parameters() if "adapter" not in n)
    with torch.no_grad():
        cnn[2].adapter.up.weight.add_(cnn[2].adapter.up.weight.grad)
    assert not torch.allclose(cnn(images), before)


def test_bottleneck_adapter_is_a_residual_bottleneck():
    torch.manual_seed(4)
    adapter = BottleneckAdapter(6, 2)
    with torch.no_grad():
        adapter.up.weight.normal_()
    x = torch.randn(3, 6)
    torch.testing.assert_close(adapter(x), x + adapter.up(torch.relu(adapter.down(x))))


def test_mistakes_are_one_line_errors():
    model = TinyLM()
    with pytest.raises(PsxError, match="name no Linear"):
        add_lora(model, ["decoder"], rank=2)
    with pytest.raises(PsxError, match="rank"):
        LoRA(4, 4, rank=0)
    with pytest.raises(PsxError, match="no block"):
        add_adapters(model, ["blocks.7"], 2, torch.randn(3, 1, 10))
    add_adapters(model, ["blocks.0"], 2, torch.randn(3, 1, 10))
    with pytest.raises(PsxError, match="already"):
        add_adapters(model, ["blocks.0"], 2, torch.randn(3, 1, 10))
    with pytest.raises(PsxError, match="trainable prefixes"):
        freeze_all_but(model, trainable=["heads"])
    lstm = nn.Sequential(nn.LSTM(4, 4))
    with pytest.raises(PsxError, match="not a tensor"):
        add_adapters(lstm, ["0"], 2, torch.randn(3, 1, 4))
