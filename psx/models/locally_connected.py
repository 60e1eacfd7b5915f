"""LocallyConnected2d: a convolution without weight sharing.

Every output position has its own filter and bias. The weight has Keras' layout
(positions, in_channels * k * k, out_channels): the input is unfolded into the patch of each
position, then one batched matmul over positions applies each position's filter to its patch.
No intermediate is larger than the unfolded input (unlike the common batch x out x in x H x W x k^2
broadcast).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel_size) // stride + 1


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
        patch = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(positions, patch, out_channels))
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
        filters = conv.weight.reshape(self.out_channels, -1).t()  # (patch, out)
        self.weight.copy_(filters.expand_as(self.weight))
        if self.bias is not None:
            self.bias.copy_(conv.bias.view(-1, 1, 1).expand_as(self.bias))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, patch, L)
        out = torch.bmm(patches.permute(2, 0, 1), self.weight)  # (L, B, out)
        out = out.permute(1, 2, 0).reshape(batch, self.out_channels, *self.output_size)
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )
