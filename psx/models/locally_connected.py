"""LocallyConnected2d: a convolution without weight sharing.

Every output position has its own filter bank and bias. The weight is laid out as
(positions, k * k * in_channels, out_channels): at each position a filter matrix with the patch
ordered (row, column, channel).

The computation is one batched matmul over positions, patches(L, B, K) @ weight(L, K, O) ->
out(L, B, O). Activations come in and go out channels-last (the layout PyTorch's CPU pooling and
ReLU are fastest on, and that a CNN built here runs in): the input is copied once to a padded
(H, B, W, C) array, in which each patch row (k columns x C channels) is one contiguous run, and each
block of output rows (l, B, O) becomes channels-last, with the bias added, by moving whole rows of
O channels while the block is still in cache. The usual unfold + permute + bmm layout makes CPU bmm
copy each of the L slices and spends its time in im2col/col2im and in transposes with the batch
innermost (see scripts/bench_lc.py). Patches are gathered a block of output rows at a time, so no
intermediate is larger than the unfolded input (unlike the batch x out x in x H x W x k^2 broadcast
of common snippets). A first layer on few channels (K <= O) keeps its patches for the backward pass
(they are no larger than its output), gathered batch-innermost from a padded (H, W, C, B) copy, where
a patch row is k*C*B contiguous values rather than k*C (9 for RGB); other layers keep only the padded
input and gather the patches again.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


def _windows(x_hbwc: torch.Tensor, k: int, stride: int, rows: int, out_w: int) -> torch.Tensor:
    """(H, B, W, C) padded input, from its first row of interest -> a (rows, out_w, B, k, k, C) view."""
    _, batch, _, channels = x_hbwc.shape
    s_h, s_b, s_w, s_c = x_hbwc.stride()
    return x_hbwc.as_strided((rows, out_w, batch, k, k, channels), (stride * s_h, stride * s_w, s_b, s_h, s_w, s_c))


def _patches(x_hbwc: torch.Tensor, k: int, stride: int, rows: int, out_w: int) -> torch.Tensor:
    """(H, B, W, C) padded input, from its first row of interest -> (rows * out_w, B, k*k*C) patches."""
    windows = _windows(x_hbwc, k, stride, rows, out_w)
    return windows.reshape(rows * out_w, windows.shape[2], -1)


# Patches are gathered a block of output rows at a time, about this many bytes per block: blocks
# this size stay in cache between the gather and the matmul, and they are reused from the heap,
# where one buffer for all rows (often over glibc's 32 MB mmap threshold) is mapped afresh and
# page-faulted in on every call.
BLOCK_BYTES = 4 * 2**20


def _row_blocks(batch: int, values_per_position: int, itemsize: int, out_h: int, out_w: int):
    """(first row, row count) of each block of output rows, at about BLOCK_BYTES of
    values_per_position (a patch, or an output) per position and batch item."""
    row_bytes = out_w * batch * values_per_position * itemsize
    rows = max(1, min(out_h, BLOCK_BYTES // max(row_bytes, 1)))
    return [(first, min(rows, out_h - first)) for first in range(0, out_h, rows)]


def _to_hwcb(x: torch.Tensor, padding: int) -> torch.Tensor:
    """(B, C, H, W) in any memory layout -> zero-padded (H + 2p, W + 2p, C, B), contiguous."""
    batch, channels, height, width = x.shape
    padded = x.new_zeros(height + 2 * padding, width + 2 * padding, channels, batch)
    # As one 2-D transpose, (B, H*W*C) -> (H*W*C, B): twice as fast as copying the 4-D permutation.
    hwc_b = x.permute(0, 2, 3, 1).reshape(batch, -1).t().contiguous()
    padded[padding:padding + height, padding:padding + width] = hwc_b.view(height, width, channels, batch)
    return padded


def _windows_batch_innermost(x_hwcb: torch.Tensor, k: int, stride: int, rows: int, out_w: int) -> torch.Tensor:
    """(H, W, C, B) padded input, from its first row of interest -> a (rows, out_w, k, k*C*B) view:
    each of a patch's k rows is one contiguous run of k columns x C channels x B."""
    s_h, s_w = x_hwcb.stride(0), x_hwcb.stride(1)
    return x_hwcb.as_strided((rows, out_w, k, k * s_w), (stride * s_h, stride * s_w, s_h, 1))


def _to_hbwc(x: torch.Tensor, padding: int) -> torch.Tensor:
    """(B, C, H, W) in any memory layout -> zero-padded (H + 2p, B, W + 2p, C), contiguous."""
    batch, channels, height, width = x.shape
    padded = x.new_zeros(height + 2 * padding, batch, width + 2 * padding, channels)
    padded[padding:padding + height, :, padding:padding + width] = x.permute(2, 0, 3, 1)
    return padded


class _LocallyConnectedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, kernel_size, stride, padding, out_h, out_w):
        batch = x.shape[0]
        # Under autocast compute in its dtype (bf16/fp16), as a conv would; backward casts back.
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight = x.to(dtype), weight.to(dtype)
        positions, patch_size, out_channels = weight.shape
        kept = patch_size <= out_channels
        if kept:
            # Patches no larger than this layer's output (K <= O: a first layer, on few channels) are
            # kept for the backward pass, gathered batch-innermost (L, K, B) from a padded (H, W, C, B)
            # copy of the input, in which a patch row (k columns x C channels x B) is one contiguous
            # run: for 3 channels, runs of 9 x B values instead of 9. With a bias, a row of ones
            # follows the K patch values, so that backward's weight-gradient matmul also sums the
            # output gradient over the batch (the bias gradient) instead of a second pass over it.
            source = _to_hwcb(x, padding)
            kept_patches = x.new_empty(positions, patch_size + (bias is not None), batch)
            kept_patches[:, patch_size:].fill_(1)
            ctx.save_for_backward(kept_patches, weight)
        else:
            # Larger patches are gathered a block at a time, here and again in backward; only the
            # padded input (k*k times smaller) is kept.
            source = _to_hbwc(x, padding)
            ctx.save_for_backward(source, weight)
        ctx.kept_patches = kept
        ctx.geometry = (x.shape, kernel_size, stride, padding, out_h, out_w)
        result = torch.empty((batch, out_channels, out_h, out_w), dtype=dtype, device=x.device,
                             memory_format=torch.channels_last)
        # Channels innermost like the rest, so that a block's rows of O values move as wholes.
        bias_ohw = None if bias is None else bias.to(dtype).permute(1, 2, 0).contiguous().permute(2, 0, 1)
        blocks = _row_blocks(batch, max(patch_size, out_channels), x.element_size(), out_h, out_w)
        out = x.new_empty(blocks[0][1] * out_w, batch, out_channels)  # one block's (l, B, O)
        with torch.autocast(device_type, enabled=False):
            for first, rows in blocks:
                at, block_out = slice(first * out_w, (first + rows) * out_w), out[:rows * out_w]
                if kept:
                    windows = _windows_batch_innermost(source[first * stride:], kernel_size, stride, rows, out_w)
                    kept_patches[at, :patch_size].view(windows.shape).copy_(windows)
                    patches = kept_patches[at, :patch_size].transpose(1, 2)
                else:
                    patches = _patches(source[first * stride:], kernel_size, stride, rows, out_w)
                torch.bmm(patches, weight[at], out=block_out)  # (l, B, K) @ (l, K, O)
                # The block's (rows, W, B, O) into the result's rows, plus the bias, while it is in cache.
                block_bohw = block_out.view(rows, out_w, batch, -1).permute(2, 3, 0, 1)
                target = result[:, :, first:first + rows]
                if bias_ohw is None:
                    target.copy_(block_bohw)
                else:
                    torch.add(block_bohw, bias_ohw[:, first:first + rows], out=target)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        saved, weight = ctx.saved_tensors  # saved: the kept patches (L, K [+ 1], B) or the padded (H, B, W, C) input
        (batch, channels, height, width), k, stride, padding, out_h, out_w = ctx.geometry
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        grad = grad_out.to(saved.dtype).permute(2, 3, 0, 1).reshape(out_h * out_w, batch, -1)  # (L, B, O)
        if grad.stride(2) != 1:  # bmm takes each position's (B, O) rows in place when channels are innermost
            grad = grad.contiguous()
        need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        padded_shape = (height + 2 * padding, batch, width + 2 * padding, channels)
        grad_weight = torch.empty_like(weight) if need_weight and not ctx.kept_patches else None
        grad_hbwc = saved.new_zeros(padded_shape) if need_x else None
        summed_grad = None  # (L, O): the output gradient summed over the batch
        if need_weight and ctx.kept_patches:  # (L, K [+ 1], B) @ (L, B, O)
            product = torch.bmm(saved, grad)
            grad_weight = product[:, :weight.shape[1]].contiguous()
            if product.shape[1] > weight.shape[1]:  # the ones row
                summed_grad = product[:, -1]
        for first, rows in _row_blocks(batch, k * k * channels, saved.element_size(), out_h, out_w):
            at = slice(first * out_w, (first + rows) * out_w)
            if need_weight and not ctx.kept_patches:
                patches = _patches(saved[first * stride:], k, stride, rows, out_w)
                torch.bmm(patches.transpose(1, 2), grad[at], out=grad_weight[at])
            if need_x:
                grad_patches = torch.bmm(grad[at], weight[at].transpose(1, 2)).view(rows, out_w, batch, k, k, channels)
                target = grad_hbwc[first * stride:]
                span_h, span_w = stride * (rows - 1) + 1, stride * (out_w - 1) + 1
                for i in range(k):  # scatter each kernel offset back onto the (overlapping) input pixels
                    for j in range(k):
                        # (rows, out_w, B, C) patch values onto input rows i.., columns j.. of (H, B, W, C)
                        target[i:i + span_h:stride, :, j:j + span_w:stride] += grad_patches[:, :, :, i, j].transpose(1, 2)
        grad_x = None
        if need_x:
            interior = grad_hbwc[padding:padding + height, :, padding:padding + width]  # (H, B, W, C)
            grad_x = interior.permute(1, 3, 0, 2).contiguous(memory_format=torch.channels_last).to(x_dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight_dtype)
        grad_bias = None
        if ctx.needs_input_grad[2]:  # (L, O) summed over the batch -> (O, out_h, out_w)
            summed_grad = grad.sum(1) if summed_grad is None else summed_grad
            grad_bias = summed_grad.reshape(out_h, out_w, -1).permute(2, 0, 1).to(bias_dtype).contiguous()
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
        self.weight = nn.Parameter(torch.empty(positions, kernel_size * kernel_size * in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution as nn.Conv2d (kaiming_uniform with a=sqrt(5) -> U(-1/sqrt(fan_in), ..)),
        # with the same fan-in, so shared and unshared twins start at the same scale.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size * self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def as_conv_filters(self, weight_like: torch.Tensor) -> torch.Tensor:
        """The weight (or a tensor laid out like it, such as its gradient) as one conv filter bank
        per position: (positions, out_channels, in_channels, k, k), a view."""
        k = self.kernel_size
        return weight_like.view(-1, k, k, self.in_channels, self.out_channels).permute(0, 4, 3, 1, 2)

    @torch.no_grad()
    def copy_from_conv(self, conv: nn.Conv2d) -> "LocallyConnected2d":
        """Give every position the conv's filter and bias (then this layer computes the conv)."""
        self.as_conv_filters(self.weight).copy_(conv.weight.unsqueeze(0).expand(len(self.weight), *conv.weight.shape))
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
