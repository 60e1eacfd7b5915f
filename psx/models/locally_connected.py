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


# Patches are gathered a block of output rows at a time, about this many bytes per block: blocks
# this size stay in cache between the gather and the matmul, and they are reused from the heap,
# where one buffer for all rows (often over glibc's 32 MB mmap threshold) is mapped afresh and
# page-faulted in on every call.
BLOCK_BYTES = 2 * 2**20


def _row_blocks(x_chwb: torch.Tensor, k: int, out_h: int, out_w: int):
    """(first row, row count) of each block of output rows."""
    row_bytes = out_w * x_chwb.shape[0] * k * k * x_chwb.shape[3] * x_chwb.element_size()
    rows = max(1, min(out_h, BLOCK_BYTES // max(row_bytes, 1)))
    return [(first, min(rows, out_h - first)) for first in range(0, out_h, rows)]


class _LocallyConnectedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, kernel_size, stride, padding, out_h, out_w):
        batch = x.shape[0]
        # Under autocast compute in its dtype (bf16/fp16), as a conv would; backward casts back.
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight = x.to(dtype), weight.to(dtype)
        # The bias as (L, O, 1): the matmul starts from it (broadcast over the batch), which is one
        # pass over the output instead of a separate broadcast add on the permuted output.
        bias_lo = None if bias is None else bias.to(dtype).permute(1, 2, 0).reshape(out_h * out_w, -1, 1)
        x_chwb = F.pad(x, (padding,) * 4).permute(1, 2, 3, 0).contiguous()
        out = x.new_empty(out_h * out_w, weight.shape[1], batch)  # (L, O, B)
        with torch.autocast(device_type, enabled=False):
            for first, rows in _row_blocks(x_chwb, kernel_size, out_h, out_w):
                at = slice(first * out_w, (first + rows) * out_w)
                patches = _patches(x_chwb[:, first * stride:], kernel_size, stride, rows, out_w)  # (l, K, B)
                if bias_lo is None:
                    torch.bmm(weight[at], patches, out=out[at])
                else:
                    torch.baddbmm(bias_lo[at], weight[at], patches, out=out[at])
        # The padded input is saved, not the patches (k*k times smaller); backward gathers them again.
        ctx.save_for_backward(x_chwb, weight)
        ctx.geometry = (x.shape, kernel_size, stride, padding, out_h, out_w)
        return out.view(out_h, out_w, -1, batch).permute(3, 2, 0, 1)  # (B, O, out_h, out_w) view

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x_chwb, weight = ctx.saved_tensors
        (batch, channels, height, width), k, stride, padding, out_h, out_w = ctx.geometry
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        # contiguous: an upstream gradient may arrive expanded (stride 0, e.g. from .sum()), and bmm
        # would copy such an operand slice by slice.
        grad = grad_out.to(x_chwb.dtype).permute(2, 3, 1, 0).reshape(out_h * out_w, -1, batch).contiguous()  # (L, O, B)
        need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_weight = torch.empty_like(weight) if need_weight else None
        grad_chwb = torch.zeros_like(x_chwb) if need_x else None
        for first, rows in _row_blocks(x_chwb, k, out_h, out_w):
            at = slice(first * out_w, (first + rows) * out_w)
            if need_weight:
                patches = _patches(x_chwb[:, first * stride:], k, stride, rows, out_w)
                torch.bmm(grad[at], patches.transpose(1, 2), out=grad_weight[at])
            if need_x:
                grad_patches = torch.bmm(weight[at].transpose(1, 2), grad[at]).view(rows, out_w, channels, k, k, batch)
                target = grad_chwb[:, first * stride:]
                span_h, span_w = stride * (rows - 1) + 1, stride * (out_w - 1) + 1
                for i in range(k):  # scatter each kernel offset back onto the (overlapping) input pixels
                    for j in range(k):
                        target[:, i:i + span_h:stride, j:j + span_w:stride] += grad_patches[:, :, :, i, j].permute(2, 0, 1, 3)
        grad_x = None
        if need_x:
            grad_x = grad_chwb[:, padding:padding + height, padding:padding + width].permute(3, 0, 1, 2).to(x_dtype).contiguous()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight_dtype)
        grad_bias = None
        if ctx.needs_input_grad[2]:  # (L, O) summed over the batch -> (O, out_h, out_w)
            grad_bias = grad.sum(2).view(out_h, out_w, -1).permute(2, 0, 1).to(bias_dtype).contiguous()
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


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
        return _LocallyConnectedFunction.apply(
            x, self.weight, self.bias, self.kernel_size, self.stride, self.padding, *self.output_size
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )
