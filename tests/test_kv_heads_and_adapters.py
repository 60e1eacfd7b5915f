"""kv_heads in the transformer family and model.adapter (cnn, transformer) in-process: exact counts,
equality with the LM before kv_heads, fresh adapters computing their backbone, the MNIST domains."""
import pytest
import torch
from torch import nn

from psx.cli import compose_checked
from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models import sharing_summary
from psx.models.families.cnn import CNNConfig
from test_sharing_families import MNIST, built, counts, forward_backward

pytestmark = pytest.mark.usefixtures("one_thread")  # the test machine's cores are shared

TOKENS = DataSpec("ptb", (), 50, kind="tokens", vocab_size=50, seq_len=12)


def transformer(**overrides):
    from psx.models.families.transformer import TransformerConfig

    config = TransformerConfig(name="t", arm="unshared", layers=2, hidden_size=16, heads=4, feedforward_size=32,
                               dropout=0.0, **overrides)
    return config, built(config, TOKENS)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_kv_heads_share_keys_and_values_with_exact_counts(kv_heads):
    config, model = transformer(kv_heads=kv_heads)
    _, ordinary = transformer()
    saved_per_layer = 2 * (4 - kv_heads) * (16 // 4) * (16 + 1)  # key and value rows, weights and biases
    assert counts(config, TOKENS)["params/unique"] == sum(p.numel() for p in ordinary.parameters()) - 2 * saved_per_layer
    logits, _ = model(torch.randint(0, 50, (12, 3)))
    logits.square().mean().backward()
    assert logits.shape == (12, 3, 50)


def test_kv_heads_equal_to_heads_is_the_lm_with_pytorchs_encoder_layers():
    """The LM built its blocks from nn.TransformerEncoderLayer before kv_heads: same weights, same outputs."""
    _, model = transformer()
    reference = built(transformer()[0], TOKENS)
    reference.blocks = nn.ModuleList(nn.TransformerEncoderLayer(16, 4, 32, 0.0, norm_first=True) for _ in range(2))
    reference.load_state_dict(model.state_dict())
    model.eval(), reference.eval()
    tokens = torch.randint(0, 50, (12, 3))
    assert torch.equal(model(tokens)[0], reference(tokens)[0])


def test_kv_heads_must_divide_heads():
    with pytest.raises(PsxError, match="must divide model.heads"):
        transformer(kv_heads=3)


@pytest.mark.parametrize("adapter", ["head", "bottleneck", "lora"])
def test_a_fresh_adapter_leaves_the_backbone_unchanged_and_only_the_task_tensors_train(adapter):
    backbone = built(CNNConfig(name="c", arm="shared", channels=[4, 8], hidden=[16]), MNIST)
    config = CNNConfig(name="c", arm="shared", channels=[4, 8], hidden=[16], adapter=adapter, adapter_size=2,
                       init_from="backbone")
    adapted = built(config, MNIST, seed=1)
    missing = adapted.load_state_dict(backbone.state_dict(), strict=False).missing_keys
    assert all(".adapter." in key or ".lora." in key for key in missing)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(adapted(x), backbone(x), rtol=1e-5, atol=1e-6)
    trained = {name for name, p in adapted.named_parameters() if p.requires_grad}
    task_tensors = {"head.2.weight", "head.2.bias"} | set(missing)
    assert trained == task_tensors
    summary = sharing_summary(adapted, config)
    assert summary["params/added_per_task"] == summary["params/trainable"] == sum(
        p.numel() for name, p in adapted.named_parameters() if name in task_tensors)
    forward_backward(adapted, MNIST)  # the frozen tensors get no gradient: forward_backward checks trainable ones
    assert all(p.grad is None for p in adapted.parameters() if not p.requires_grad)


@pytest.mark.parametrize("adapter", ["bottleneck", "lora"])
def test_a_transformer_with_fresh_adapters_computes_its_backbone(adapter):
    _, backbone = transformer()
    config, adapted = transformer(adapter=adapter, adapter_size=2)
    adapted.load_state_dict(backbone.state_dict(), strict=False)
    backbone.eval(), adapted.eval()
    tokens = torch.randint(0, 50, (12, 3))
    torch.testing.assert_close(adapted(tokens)[0], backbone(tokens)[0], rtol=1e-5, atol=1e-6)
    assert all((".adapter." in n or "lora" in n) for n, p in adapted.named_parameters() if p.requires_grad)


def test_mnist_domains_are_mnist_made_another_way_deterministically(mnist_root):
    from psx.data import build_data

    data_dir = str(mnist_root)  # the real MNIST files (PSX_DATA_DIR or CI's copy); skips without them outside CI
    made = {}
    for name in ("mnist", "mnist_rotated", "mnist_inverted", "mnist_permuted"):
        cfg = compose_checked([f"dataset={name}", "dataset.train_size=100", f"paths.data_dir={data_dir}"])
        made[name] = build_data(cfg.dataset, data_dir=data_dir)
    plain = made["mnist"].train.x
    assert torch.equal(made["mnist_rotated"].train.x, torch.rot90(plain, 1, dims=(2, 3)))
    assert torch.equal(made["mnist_inverted"].train.x, 255 - plain)
    permuted = made["mnist_permuted"].train.x.flatten(1)
    assert torch.equal(permuted.sort(1).values, plain.flatten(1).sort(1).values) and not torch.equal(permuted, plain.flatten(1))
    assert all(torch.equal(made[n].train.y, made["mnist"].train.y) for n in made)
