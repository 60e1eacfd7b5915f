import itertools
import math

import pytest
import torch
from torch import nn

from psx.models.locally_connected import LocallyConnected2d

GRID = list(
    itertools.product(
        [(1, 3), (3, 4)],  # (in, out) channels
        [1, 3, 5],  # kernel
        [1, 2],  # stride
        [0, 1, 2],  # padding
        [(7, 7), (9, 6)],  # input size
    )
)


@pytest.mark.parametrize("channels,kernel,stride,padding,size", GRID)
def test_equals_conv_when_given_its_weights_everywhere(channels, kernel, stride, padding, size):
    torch.manual_seed(0)
    in_ch, out_ch = channels
    if size[0] + 2 * padding < kernel or size[1] + 2 * padding < kernel:
        pytest.skip("kernel larger than padded input")
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding).double()
    lc = LocallyConnected2d(in_ch, out_ch, size, kernel, stride, padding).double().copy_from_conv(conv)

    x_conv = torch.randn(5, in_ch, *size, dtype=torch.float64, requires_grad=True)
    x_lc = x_conv.detach().clone().requires_grad_(True)
    out_conv, out_lc = conv(x_conv), lc(x_lc)
    assert out_lc.shape == out_conv.shape
    torch.testing.assert_close(out_lc, out_conv, rtol=1e-12, atol=1e-12)

    grad_out = torch.randn_like(out_conv)
    out_conv.backward(grad_out)
    out_lc.backward(grad_out)
    torch.testing.assert_close(x_lc.grad, x_conv.grad, rtol=1e-12, atol=1e-12)
    # Summing the per-position weight gradients gives the conv's shared-weight gradient.
    shared_grad = lc.as_conv_filters(lc.weight.grad).sum(0)
    torch.testing.assert_close(shared_grad, conv.weight.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_ch,out_ch,kernel,stride,padding,size", [(1, 6, 5, 1, 2, (28, 28)), (6, 16, 5, 1, 0, (14, 14)), (3, 8, 3, 2, 1, (32, 32))])
def test_parameter_count_is_out_times_positions_times_patch_plus_bias(in_ch, out_ch, kernel, stride, padding, size):
    lc = LocallyConnected2d(in_ch, out_ch, size, kernel, stride, padding)
    positions = math.prod((s + 2 * padding - kernel) // stride + 1 for s in size)
    assert sum(p.numel() for p in lc.parameters()) == out_ch * positions * (in_ch * kernel * kernel + 1)


def test_positions_really_are_independent():
    lc = LocallyConnected2d(1, 1, (4, 4), 3, 1, 1)
    with torch.no_grad():
        lc.weight.zero_()
        lc.bias.zero_()
        lc.as_conv_filters(lc.weight)[5, 0, 0, 1, 1] = 1.0  # position (1, 1): pass the centre pixel through
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = lc(x)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1, 1] = x[0, 0, 1, 1]
    torch.testing.assert_close(out, expected)


def test_initialised_like_conv2d_with_the_same_fan_in():
    torch.manual_seed(0)
    lc = LocallyConnected2d(4, 8, (10, 10), 3)
    bound = 1 / math.sqrt(4 * 9)
    assert lc.weight.abs().max() <= bound and lc.bias.abs().max() <= bound
    # Uniform(-b, b) has std b / sqrt(3): many samples, so the match is tight.
    assert abs(lc.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    conv = nn.Conv2d(4, 8, 3)
    assert conv.weight.abs().max() <= bound


def test_kernel_that_does_not_fit_is_rejected():
    with pytest.raises(ValueError):
        LocallyConnected2d(1, 1, (2, 2), 5)


# (in, out) channels at kernel 3: patches larger than the output (K = 18 > 3) or smaller (K = 9 < 12),
# which sizes the row blocks differently.
BACKWARD_PATHS = [(2, 3), (1, 12)]


@pytest.mark.parametrize("channels", BACKWARD_PATHS)
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_hand_written_backward_passes_gradcheck(stride, padding, channels):
    from psx.models.locally_connected import _LocallyConnectedFunction

    torch.manual_seed(0)
    in_ch, out_ch = channels
    lc = LocallyConnected2d(in_ch, out_ch, (5, 6), 3, stride, padding).double()
    x = torch.randn(2, in_ch, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = lc.weight.detach().clone().requires_grad_(True)
    bias = lc.bias.detach().clone().requires_grad_(True)

    def forward(x, weight, bias):
        return _LocallyConnectedFunction.apply(x, weight, bias, lc.kernel_size, lc.stride, lc.padding, *lc.output_size)

    assert torch.autograd.gradcheck(forward, (x, weight, bias))


@pytest.mark.parametrize("channels", BACKWARD_PATHS)
@pytest.mark.parametrize("bias,weight_trains", [(True, True), (False, True), (True, False)])
def test_with_and_without_bias_gradients_equal_the_convs(channels, bias, weight_trains):
    """With weight and bias both trained, a row of ones in the patches yields the bias gradient
    from the weight-gradient matmul; without a bias, or with the weight frozen, there is no such
    row and the bias gradient is summed directly."""
    torch.manual_seed(0)
    in_ch, out_ch = channels
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias).double()
    lc = LocallyConnected2d(in_ch, out_ch, (6, 5), 3, 1, 1, bias=bias).double().copy_from_conv(conv)
    lc.weight.requires_grad_(weight_trains)
    x = torch.randn(4, in_ch, 6, 5, dtype=torch.float64)
    out_conv, out_lc = conv(x), lc(x)
    torch.testing.assert_close(out_lc, out_conv, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out_conv)
    out_conv.backward(grad_out)
    out_lc.backward(grad_out)
    if weight_trains:
        torch.testing.assert_close(lc.as_conv_filters(lc.weight.grad).sum(0), conv.weight.grad, rtol=1e-10, atol=1e-10)
        assert lc.weight.grad.is_contiguous()
    else:
        assert lc.weight.grad is None
    if bias:
        torch.testing.assert_close(lc.bias.grad, grad_out.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [(3, 4), (1, 12)])  # patches larger / smaller than the output
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 2)])
def test_row_blocks_give_the_same_result_as_one_block(monkeypatch, stride, padding, channels):
    """Patches are gathered a block of output rows at a time; one row per block must change nothing."""
    import psx.models.locally_connected as module

    torch.manual_seed(0)
    in_ch, out_ch = channels
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding).double()
    lc = LocallyConnected2d(in_ch, out_ch, (9, 7), 3, stride, padding).double().copy_from_conv(conv)
    x = torch.randn(5, in_ch, 9, 7, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn_like(conv(x))
    results = []
    for block_bytes in (module.BLOCK_BYTES, 1):  # all rows in one block, then one row per block
        monkeypatch.setattr(module, "BLOCK_BYTES", block_bytes)
        assert len(module._row_blocks(5, 3 * 3 * in_ch, 8, *lc.output_size)) == (
            1 if block_bytes > 1 else lc.output_size[0])
        lc.zero_grad()
        x.grad = None
        out = lc(x)
        out.backward(grad_out)
        results.append((out.detach(), x.grad.clone(), lc.weight.grad.clone(), lc.bias.grad.clone()))
    for one_block, row_blocks in zip(*results):
        torch.testing.assert_close(row_blocks, one_block, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][0], conv(x), rtol=1e-12, atol=1e-12)


def test_works_on_non_contiguous_input_and_in_float32():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    lc = LocallyConnected2d(3, 4, (6, 6), 3, 1, 1).copy_from_conv(conv)
    x = torch.randn(6, 6, 3, 5).permute(3, 2, 0, 1)  # channels-last-like strides
    torch.testing.assert_close(lc(x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_layout,grad_layout", [
    (torch.contiguous_format, torch.channels_last),
    (torch.channels_last, torch.contiguous_format),
    (torch.channels_last, torch.channels_last),
])
def test_any_memory_layout_of_input_and_gradient_gives_the_conv_result(input_layout, grad_layout):
    """Channels-last is the fast path (channels innermost: no transposing copies); NCHW must give
    the same numbers."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=1, padding=1).double()
    lc = LocallyConnected2d(3, 4, (7, 6), 3, 1, 1).double().copy_from_conv(conv)
    x = torch.randn(5, 3, 7, 6, dtype=torch.float64)
    x_conv = x.clone().requires_grad_(True)
    x_lc = x.contiguous(memory_format=input_layout).requires_grad_(True)
    out_conv, out_lc = conv(x_conv), lc(x_lc)
    assert out_lc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_lc, out_conv, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out_conv)
    out_conv.backward(grad_out)
    out_lc.backward(grad_out.contiguous(memory_format=grad_layout))
    torch.testing.assert_close(x_lc.grad, x_conv.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lc.as_conv_filters(lc.weight.grad).sum(0), conv.weight.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lc.bias.grad.sum((1, 2)), conv.bias.grad, rtol=1e-10, atol=1e-10)
