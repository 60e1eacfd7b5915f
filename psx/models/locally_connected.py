"""LocallyConnected2d: a convolution without weight sharing.

Every output position has its own filter bank and bias. The weight is laid out as
(positions, out_channels, in_channels * k * k): at each position a conv-shaped filter matrix.

The computation is one batched matmul over positions, patches(L, K, B) -> out(L, O, B). The
patches are gathered batch-innermost from a (C, H, W, B) copy of the input, so the gather is a
copy of contiguous runs and every matmul operand is a plain row- or column-major matrix (the
usual unfold + permute + bmm layout makes CPU bmm copy each of the L slices, and im2col/col2im
dominate; see scripts/bench_lc.py). No intermediate is larger than the unfolded input (unlike the
batch x out x in x H x W x k^2 broadcast of common snippets).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


def _patches(x_chwb: torch.Tensor, k: int, stride: int, out_h: int, out_w: int) -> torch.Tensor:
    """(C, H, W, B) padded input -> (positions, C*k*k, B) patches, K ordered (c, i, j) like unfold."""
    channels, _, _, batch = x_chwb.shape
    s_c, s_h, s_w, s_b = x_chwb.stride()
    windows = x_chwb.as_strided((out_h, out_w, channels, k, k, batch), (stride * s_h, stride * s_w, s_c, s_h, s_w, s_b))
    return windows.reshape(out_h * out_w, channels * k * k, batch)


class _LocallyConnectedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, kernel_size, stride, padding, out_h, out_w):
        batch = x.shape[0]
        # Under autocast compute in its dtype (bf16/fp16), as a conv would; backward casts back.
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        ctx.dtypes = (x.dtype, weight.dtype)
        x, weight = x.to(dtype), weight.to(dtype)
        x_chwb = F.pad(x, (padding,) * 4).permute(1, 2, 3, 0).contiguous()
        patches = _patches(x_chwb, kernel_size, stride, out_h, out_w)  # (L, K, B)
        with torch.autocast(device_type, enabled=False):
            out = torch.bmm(weight, patches)  # (L, O, B)
        ctx.save_for_backward(patches, weight)
        ctx.geometry = (x.shape, kernel_size, stride, padding, out_h, out_w)
        return out.view(out_h, out_w, -1, batch).permute(3, 2, 0, 1)  # (B, O, out_h, out_w) view

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        patches, weight = ctx.saved_tensors
        (batch, channels, height, width), k, stride, padding, out_h, out_w = ctx.geometry
        x_dtype, weight_dtype = ctx.dtypes
        grad = grad_out.to(patches.dtype).permute(2, 3, 1, 0).reshape(out_h * out_w, -1, batch)  # (L, O, B)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad, patches.transpose(1, 2)).to(weight_dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # A contiguous transposed copy of the weight: CPU bmm is ~3x slower on transposed slices here.
            weight_t = weight.transpose(1, 2).contiguous()
            grad_patches = torch.bmm(weight_t, grad).view(out_h, out_w, channels, k, k, batch)
            grad_chwb = grad.new_zeros(channels, height + 2 * padding, width + 2 * padding, batch)
            rows, cols = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
            for i in range(k):  # scatter each kernel offset back onto the (overlapping) input pixels
                for j in range(k):
                    grad_chwb[:, i:i + rows:stride, j:j + cols:stride] += grad_patches[:, :, :, i, j].permute(2, 0, 1, 3)
            grad_x = grad_chwb[:, padding:padding + height, padding:padding + width].permute(3, 0, 1, 2).to(x_dtype).contiguous()
        return grad_x, grad_weight, None, None, None, None, None


class LocallyConnected2d(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: tuple[int, int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.input_size = tuple(input_size)
        self.output_size = tuple(conv_output_size(s, kernel_size, stride, padding) for s in input_size)
        if min(self.output_size) < 1:
            raise ValueError(f"kernel {kernel_size} with padding {padding} does not fit input {input_size}")
        positions = self.output_size[0] * self.output_size[1]
        self.weight = nn.Parameter(torch.empty(positions, out_channels, in_channels * kernel_size * kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution as nn.Conv2d (kaiming_uniform with a=sqrt(5) -> U(-1/sqrt(fan_in), ..)),
        # with the same fan-in, so shared and unshared twins start at the same scale.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size * self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def copy_from_conv(self, conv: nn.Conv2d) -> "LocallyConnected2d":
        """Give every position the conv's filter and bias (then this layer computes the conv)."""
        self.weight.copy_(conv.weight.reshape(self.out_channels, -1).expand_as(self.weight))
        if self.bias is not None:
            self.bias.copy_(conv.bias.view(-1, 1, 1).expand_as(self.bias))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _LocallyConnectedFunction.apply(
            x, self.weight, self.kernel_size, self.stride, self.padding, *self.output_size
        )
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )
