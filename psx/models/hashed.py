"""Hashed weights (HashedNets, Chen et al. 2015, "Compressing Neural Networks with the Hashing Trick").

A hashed layer has a virtual weight of the usual shape whose entry i is sign(i) * buckets[bucket(i)]:
a small vector of real parameters read through a fixed hash, with a second hash giving each entry a
sign so that entries sharing a bucket do not all pull it the same way. The virtual weight is
materialised each forward with one gather from [buckets, -buckets] and the layer then runs as the
dense layer (F.linear, F.conv2d); autograd's gather backward sums every virtual entry's signed
gradient into its bucket (PyTorch documents a deterministic CUDA version of that backward for
torch.use_deterministic_algorithms).
The bias is not hashed (as in the paper): one per output unit.

The hash is splitmix64 (Steele et al. 2014) computed in numpy's wrapping uint64 arithmetic: it
depends only on (seed, salt, entry index), never on Python's per-process hash randomisation or on
torch's random streams, so the same seed gives the same layer in every process and on every machine.
Each layer of a model should get its own seed, or same-shaped layers would share one pattern.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psx.errors import PsxError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BUCKET_SALT, _SIGN_SALT = 1, 2


def splitmix64(values: np.ndarray) -> np.ndarray:
    """Splitmix64's output function over a uint64 array (a bijection with full avalanche)."""
    z = values + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_entries(count: int, seed: int, salt: int) -> np.ndarray:
    """A uint64 hash of each entry index 0..count-1 under (seed, salt)."""
    key = splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF, salt], dtype=np.uint64))
    return splitmix64(np.arange(count, dtype=np.uint64) ^ key[0] ^ (key[1] << np.uint64(1)))


def bucket_map(count: int, buckets: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bucket of each virtual entry, int32; its sign, +-1.0 float32)."""
    index = (hash_entries(count, seed, _BUCKET_SALT) % np.uint64(buckets)).astype(np.int32)
    sign = 1.0 - 2.0 * (hash_entries(count, seed, _SIGN_SALT) >> np.uint64(63)).astype(np.float32)
    return torch.from_numpy(index), torch.from_numpy(sign)


def bucket_count(virtual: int, compression: float) -> int:
    """Real parameters for a virtual weight at a compression factor (e.g. 1/8): round(virtual x
    compression), at least 1."""
    if not 0 < compression <= 1:
        raise PsxError(f"hashed layer: compression must be in (0, 1], e.g. 0.125 for 1/8 (got {compression})")
    return max(1, round(virtual * compression))


def exact_ratio(virtual: int, real: int) -> float:
    """virtual / real as a float r with real * r == virtual exactly in float arithmetic, so that a
    parameter count of numel x reuse is the virtual size itself (1/49*49 is not 1 in floats: the
    nearest float is nudged a few ulps until the product rounds back)."""
    ratio = virtual / real
    for _ in range(64):
        if ratio * real == virtual:
            return ratio
        ratio = math.nextafter(ratio, math.inf if ratio * real < virtual else -math.inf)
    raise ArithmeticError(f"no float ratio gives {real} x ratio == {virtual}")


class _HashedWeight(nn.Module):
    """The buckets, the fixed map, and the virtual weight they make."""

    def __init__(self, shape: tuple[int, ...], compression: float, seed: int, buckets: int | None):
        super().__init__()
        self.virtual_shape, self.seed = tuple(shape), seed
        virtual = math.prod(shape)
        real = bucket_count(virtual, compression) if buckets is None else buckets
        if not 1 <= real <= virtual:
            raise PsxError(f"hashed layer: {real} buckets for {virtual} virtual weights (need 1..{virtual})")
        self.compression = real / virtual
        self.buckets = nn.Parameter(torch.empty(real))
        index, sign = bucket_map(virtual, real, seed)
        # The sign folded into the index: entries with sign -1 read the second half of [buckets, -buckets].
        # Not saved in checkpoints (the seed remakes it); int32 halves it, and its gather is faster.
        self.register_buffer("signed_index", torch.where(sign > 0, index, index + real), persistent=False)

    def virtual_weight(self) -> torch.Tensor:
        # One gather from the signed table, no multiply: faster than gather-then-sign, forward and
        # backward (whose scatter-add sums each half; the cat's backward subtracts them).
        table = torch.cat([self.buckets, -self.buckets])
        return table.index_select(0, self.signed_index).view(self.virtual_shape)

    def parameter_reuse(self) -> dict[str, float]:
        """`params/unshared_equiv` counts the virtual weight: each bucket stands for virtual/buckets entries."""
        return {"buckets": exact_ratio(math.prod(self.virtual_shape), self.buckets.numel())}

    def _init_buckets(self, fan_in: int) -> None:
        # nn.Linear's and nn.Conv2d's distribution, U(-1/sqrt(fan_in), ..): every virtual entry has
        # the dense layer's marginal distribution (the sign hash keeps it symmetric).
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.buckets, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class HashedLinear(_HashedWeight):
    def __init__(self, in_features: int, out_features: int, compression: float, seed: int = 0,
                 bias: bool = True, buckets: int | None = None):
        super().__init__((out_features, in_features), compression, seed, buckets)
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self._init_buckets(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.virtual_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, buckets={self.buckets.numel()}, "
                f"compression={self.compression:.4g}, seed={self.seed}")


class HashedConv2d(_HashedWeight):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 compression: float = 1.0, seed: int = 0, bias: bool = True, buckets: int | None = None):
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), compression, seed, buckets)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._init_buckets(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.virtual_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, buckets={self.buckets.numel()}, compression={self.compression:.4g}, seed={self.seed}")
