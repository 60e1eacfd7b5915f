import math

import pytest
import torch
from torch import nn

from psx.errors import PsxError
from psx.models.locally_connected import LocallyConnected2d
from psx.models.soft_shared import SoftSharedConv2d, StrengthSchedule, pair_penalty, soft_penalty
from psx.models.untie import conv_input_sizes, untie, untie_convs

# (in, out, kernel, stride, padding, input size)
SHAPES = [(1, 4, 3, 1, 1, (8, 8)), (3, 5, 3, 2, 1, (9, 7)), (2, 3, 5, 1, 0, (10, 10)), (4, 2, 1, 1, 0, (5, 6))]


def conv_and_soft(cin, cout, k, stride, padding, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding).double()
    soft = SoftSharedConv2d(cin, cout, size, k, stride, padding).double()
    soft.load_state_dict({**soft.state_dict(), "weight": conv.weight, "bias": conv.bias})
    return conv, soft


@pytest.mark.parametrize("cin,cout,k,stride,padding,size", SHAPES)
def test_with_zero_offsets_it_is_the_conv_outputs_and_gradients(cin, cout, k, stride, padding, size):
    conv, soft = conv_and_soft(cin, cout, k, stride, padding, size)
    assert soft.offset.abs().sum() == 0 and soft.bias_offset.abs().sum() == 0  # fresh offsets are zero
    x_conv = torch.randn(4, cin, *size, dtype=torch.float64, requires_grad=True)
    x_soft = x_conv.detach().clone().requires_grad_(True)
    out_conv, out_soft = conv(x_conv), soft(x_soft)
    torch.testing.assert_close(out_soft, out_conv, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out_conv)
    out_conv.backward(grad_out)
    out_soft.backward(grad_out)
    torch.testing.assert_close(soft.weight.grad, conv.weight.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(soft.bias.grad, conv.bias.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_soft.grad, x_conv.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin,cout,k,stride,padding,size", SHAPES)
def test_offsets_free_it_expresses_any_locally_connected_layer_exactly(cin, cout, k, stride, padding, size):
    torch.manual_seed(1)
    lc = LocallyConnected2d(cin, cout, size, k, stride, padding)
    soft = SoftSharedConv2d(cin, cout, size, k, stride, padding).load_locally_connected(lc)
    x = torch.randn(3, cin, *size)
    assert torch.equal(soft(x), lc(x))
    # ... and from any shared filter: D_p = LC filter - W gives the same function (up to rounding).
    with torch.no_grad():
        soft.weight.normal_()
        soft.bias.normal_()
        soft.offset.copy_(lc.weight - soft.shared_filters())
        soft.bias_offset.copy_(lc.bias - soft.bias.view(-1, 1, 1))
    torch.testing.assert_close(soft(x), lc(x), rtol=1e-5, atol=1e-5)
    assert soft.offset.shape == lc.weight.shape and soft.bias_offset.shape == lc.bias.shape


def test_gradient_reaches_each_offset_as_the_locally_connected_weight_gradient():
    torch.manual_seed(2)
    lc = LocallyConnected2d(2, 3, (6, 6), 3, 1, 1).double()
    soft = SoftSharedConv2d(2, 3, (6, 6), 3, 1, 1).double().load_locally_connected(lc)
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    grad_out = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    lc(x).backward(grad_out)
    soft(x).backward(grad_out)
    torch.testing.assert_close(soft.offset.grad, lc.weight.grad)
    torch.testing.assert_close(soft.bias_offset.grad, lc.bias.grad)
    # W's gradient is the sum over positions (the conv's gradient).
    torch.testing.assert_close(soft.weight.grad, lc.as_conv_filters(lc.weight.grad).sum(0))


def test_penalty_is_the_mean_over_positions_of_squared_offsets():
    soft = SoftSharedConv2d(2, 3, (4, 5), 3, 1, 1)
    with torch.no_grad():
        soft.offset.normal_()
        soft.bias_offset.normal_()
    by_position = [soft.offset[p].square().sum() + soft.bias_offset.flatten(1)[:, p].square().sum()
                   for p in range(20)]
    torch.testing.assert_close(soft.penalty(), torch.stack(by_position).mean())
    other = SoftSharedConv2d(3, 1, (4, 5), 3, 1, 1)
    with torch.no_grad():
        other.offset.fill_(1.0)
    torch.testing.assert_close(soft_penalty(nn.Sequential(soft, nn.ReLU(), other)), soft.penalty() + other.penalty())
    torch.testing.assert_close(other.penalty(), torch.tensor(27.0))  # per position: 27 weight offsets of 1, bias offsets 0
    assert soft_penalty(nn.Linear(2, 2)) == 0
    soft.penalty().backward()  # its gradient pulls the offsets (only) towards 0
    torch.testing.assert_close(soft.offset.grad, 2 * soft.offset.detach() / 20)
    assert soft.weight.grad is None


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_the_penalty_as_weight_decay_on_the_offsets_takes_the_same_steps(optimizer):
    torch.manual_seed(6)
    in_loss = SoftSharedConv2d(2, 3, (5, 5), 3, 1, 1).double()
    with torch.no_grad():
        in_loss.offset.normal_()
        in_loss.bias_offset.normal_()
    as_decay = SoftSharedConv2d(2, 3, (5, 5), 3, 1, 1).double()
    as_decay.load_state_dict(in_loss.state_dict())
    strength, x = 0.7, torch.randn(4, 2, 5, 5, dtype=torch.float64)
    offsets = {id(p) for p in as_decay.offset_parameters()}
    first = optimizer(in_loss.parameters(), lr=0.05)
    second = optimizer([{"params": [p for p in as_decay.parameters() if id(p) not in offsets]},
                        {"params": as_decay.offset_parameters(), "weight_decay": as_decay.penalty_decay(strength)}], lr=0.05)
    for _ in range(3):
        for model, opt, penalised in ((in_loss, first, True), (as_decay, second, False)):
            opt.zero_grad()
            loss = model(x).square().mean() + (strength * model.penalty() if penalised else 0)
            loss.backward()
            opt.step()
    for name, tensor in in_loss.state_dict().items():
        torch.testing.assert_close(as_decay.state_dict()[name], tensor, rtol=1e-10, atol=1e-12)


def test_parameter_reuse_counts_the_locally_connected_twin_exactly():
    soft = SoftSharedConv2d(3, 8, (9, 9), 3, 2, 1)
    lc = LocallyConnected2d(3, 8, (9, 9), 3, 2, 1)
    reuse = soft.parameter_reuse()
    equiv = sum(p.numel() * reuse[name] for name, p in soft.named_parameters())
    assert equiv == sum(p.numel() for p in lc.parameters())
    assert sum(p.numel() for p in soft.parameters()) == equiv + 8 * 27 + 8  # plus the shared W and b


def test_strength_schedules():
    assert StrengthSchedule(0.5).at(0) == StrengthSchedule(0.5).at(9) == 0.5
    linear = StrengthSchedule(1.0, 0.0, epochs=4, shape="linear")
    assert [linear.at(e) for e in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    cosine = StrengthSchedule(2.0, 0.0, epochs=2, shape="cosine")
    assert cosine.at(0) == 2.0 and math.isclose(cosine.at(1), 1.0) and cosine.at(5) == 0.0
    exponential = StrengthSchedule(100.0, 0.01, epochs=4, shape="exponential")
    assert math.isclose(exponential.at(2), 1.0) and math.isclose(exponential.at(4), 0.01)
    for bad in [dict(start=1.0, shape="step"), dict(start=-1.0), dict(start=1.0, end=0.0, epochs=3, shape="exponential")]:
        with pytest.raises(PsxError):
            StrengthSchedule(**bad)


def test_pair_penalty_pulls_matching_tensors_together():
    torch.manual_seed(3)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = (a.weight - b.weight).square().sum() + (a.bias - b.bias).square().sum()
    torch.testing.assert_close(pair_penalty(a, b), expected)
    b.load_state_dict(a.state_dict())
    assert pair_penalty(a, b) == 0
    with pytest.raises(ValueError):
        pair_penalty(a, nn.Linear(3, 4))


@pytest.mark.parametrize("into", ["locally_connected", "soft"])
@pytest.mark.parametrize("bias", [True, False])
def test_untied_layer_computes_what_the_conv_did(into, bias):
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias).double()
    layer = untie(conv, (9, 9), into)
    assert isinstance(layer, LocallyConnected2d if into == "locally_connected" else SoftSharedConv2d)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-12, atol=1e-12)
    assert layer.weight.dtype == torch.float64


def test_untie_convs_replaces_a_models_convs_in_place_with_equal_outputs():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 10))
    x = torch.randn(5, 1, 8, 8)
    before = model(x)
    assert conv_input_sizes(model, x) == {"0": (8, 8), "3": (4, 4)}
    assert untie_convs(model, x) == ["0", "3"]
    assert isinstance(model[0], LocallyConnected2d) and isinstance(model[3], LocallyConnected2d)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        untie_convs(model, x, names=["0"])  # no conv left under that name
