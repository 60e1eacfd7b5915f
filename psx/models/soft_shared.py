"""Soft sharing: a continuum between a convolution and a locally connected layer.

SoftSharedConv2d has one filter bank W (laid out as nn.Conv2d's weight, so a conv's weights load
into it by name) and a per-position offset D_p (laid out as LocallyConnected2d's weight); position p
applies W_p = W + D_p, and likewise bias_p = b + d_p. `penalty()` = mean_p (||D_p||^2 + ||d_p||^2);
the model's loss adds strength * penalty. Strength 0 leaves the offsets free, which is a locally
connected layer; a large strength pins them at 0, which is the conv. The offsets start at zero, so a
fresh layer computes the conv.

The per-position weights are formed once per forward (one add over the weight, a fraction of the
matmul's work) and handed to LocallyConnected2d's kernel; autograd sums their gradient over
positions for W and passes it through unchanged to D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from psx.errors import PsxError
from psx.models.eager import run_eagerly_under_compile
from psx.models.locally_connected import LocallyConnected2d, locally_connected2d, set_geometry


class SoftSharedConv2d(nn.Module):
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
        self.positions = set_geometry(self, in_channels, out_channels, input_size, kernel_size, stride, padding)
        patch = kernel_size * kernel_size * in_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.offset = nn.Parameter(torch.empty(self.positions, patch, out_channels))
        self.bias_offset = nn.Parameter(torch.empty(out_channels, *self.output_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # W and b as nn.Conv2d draws them (U(-1/sqrt(fan_in), ..)), the offsets at 0: a fresh layer is the conv.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size * self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.offset)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)
            nn.init.zeros_(self.bias_offset)

    def shared_filters(self) -> torch.Tensor:
        """W in LocallyConnected2d's layout, (1, k*k*in, out): patch ordered (row, column, channel)."""
        return self.weight.permute(2, 3, 1, 0).reshape(1, -1, self.out_channels)

    def position_weights(self) -> torch.Tensor:
        """W + D_p for every position p, (positions, k*k*in, out), as LocallyConnected2d lays out its weight."""
        return self.offset + self.shared_filters()

    def position_biases(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias_offset + self.bias.view(-1, 1, 1)

    @run_eagerly_under_compile
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return locally_connected2d(x, self.position_weights(), self.position_biases(),
                                   self.kernel_size, self.stride, self.padding, self.output_size)

    def penalty(self) -> torch.Tensor:
        """mean_p ||D_p||^2 (with each position's bias offset): the family multiplies it by its strength."""
        total = self.offset.square().sum()
        if self.bias_offset is not None:
            total = total + self.bias_offset.square().sum()
        return total / self.positions

    def penalty_decay(self, strength: float) -> float:
        """The L2 weight decay on the offsets whose gradient is that of strength x penalty():
        (2 strength / positions) D. Given to the offsets' optimizer parameter group (SGD's or Adam's
        weight_decay, which add decay x parameter to the gradient; not AdamW's), it applies the
        penalty inside the optimizer's own pass over the weights, instead of an extra forward and
        backward pass over every offset each step."""
        return 2.0 * strength / self.positions

    def offset_parameters(self) -> list[nn.Parameter]:
        return [self.offset] + ([] if self.bias_offset is None else [self.bias_offset])

    def parameter_reuse(self) -> dict[str, float]:
        """Reuse counts, by local parameter name, that make `params/unshared_equiv` what the locally
        connected twin has: the offsets hold one filter per position, exactly the twin's tensors, and the
        shared W and b add no position of their own (0): they are what soft sharing costs beyond it."""
        reuse = {"weight": 0.0, "offset": 1.0}
        if self.bias is not None:
            reuse.update({"bias": 0.0, "bias_offset": 1.0})
        return reuse

    @torch.no_grad()
    def load_locally_connected(self, lc: LocallyConnected2d) -> "SoftSharedConv2d":
        """Express a LocallyConnected2d exactly: W = 0, b = 0, D_p = its filters, d_p = its biases."""
        self.weight.zero_()
        self.offset.copy_(lc.weight)
        if self.bias is not None:
            self.bias.zero_()
            self.bias_offset.copy_(lc.bias)
        return self

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}")


def soft_penalty(model: nn.Module) -> torch.Tensor:
    """The sum of every SoftSharedConv2d's penalty in the model (0 when it has none)."""
    penalties = [m.penalty() for m in model.modules() if isinstance(m, SoftSharedConv2d)]
    return torch.stack(penalties).sum() if penalties else torch.zeros(())


SCHEDULE_SHAPES = ("constant", "linear", "cosine", "exponential")


@dataclass(frozen=True)
class StrengthSchedule:
    """The soft-sharing strength per epoch (0-based): `start` at epoch 0, moving to `end` over
    `epochs` epochs in the given shape, then staying at `end`. Annealing from strong (conv-like) to
    weak (locally connected) is dynamic sharing without a hard switch. "exponential" interpolates the
    logarithm, so it needs start and end > 0."""

    start: float
    end: float | None = None
    epochs: int = 0
    shape: str = "constant"

    def __post_init__(self):
        if self.shape not in SCHEDULE_SHAPES:
            raise PsxError(f"soft strength schedule {self.shape!r} is not one of {', '.join(SCHEDULE_SHAPES)}")
        if self.start < 0 or (self.end is not None and self.end < 0) or self.epochs < 0:
            raise PsxError(f"soft strength schedule needs start, end >= 0 and epochs >= 0 (got {self.start}, {self.end}, {self.epochs})")
        if self.shape == "exponential" and (self.start <= 0 or not self.end):
            raise PsxError("an exponential soft strength schedule needs start > 0 and end > 0")

    def at(self, epoch: int) -> float:
        end = self.start if self.end is None else self.end
        if self.shape == "constant" or self.epochs == 0:
            return self.start if self.shape == "constant" else end
        progress = min(max(epoch, 0) / self.epochs, 1.0)
        if self.shape == "linear":
            return self.start + (end - self.start) * progress
        if self.shape == "cosine":
            return end + (self.start - end) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.start * (end / self.start) ** progress


def pair_penalty(first: nn.Module, second: nn.Module) -> torch.Tensor:
    """Soft sharing between two networks of the same architecture (Duong et al. 2015): the sum of
    ||a - b||^2 over their parameters matched by name. Every name must match, with the same shape,
    so that a mismatch is an error, not a silently smaller penalty."""
    a, b = dict(first.named_parameters()), dict(second.named_parameters())
    if a.keys() != b.keys() or any(a[n].shape != b[n].shape for n in a):
        raise ValueError("pair_penalty needs two networks with the same parameter names and shapes")
    if not a:
        return torch.zeros(())
    return torch.stack([(a[n] - b[n]).square().sum() for n in a]).sum()
