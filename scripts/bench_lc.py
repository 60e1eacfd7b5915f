"""LocallyConnected2d vs nn.Conv2d: forward+backward time and peak memory, as ratios.

What it measures: at batch 128, for each of the shapes below, the median wall time of one
forward + backward pass (from a dense random upstream gradient; gradients for input, weights and
bias; the three kinds interleaved repeat by repeat), after warm-up,
of (a) nn.Conv2d — the baseline, (b) psx's LocallyConnected2d, and (c) the plain "unfold +
permute + bmm" formulation most implementations use, for reference. Memory comes from the
torch profiler's allocator events (peak and largest single allocation of one pass).
All three are measured in the same run, on the same machine, so only the ratios matter.

    python scripts/bench_lc.py [--repeats 20] [--device cpu|cuda] [--json out.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from psx.models.locally_connected import LocallyConnected2d, conv_output_size

# (in_channels, out_channels, size, kernel, padding): the layers of LeNet-style CNNs on MNIST/CIFAR.
SHAPES = [(1, 6, 28, 5, 2), (6, 16, 14, 5, 0), (32, 64, 16, 3, 1)]
BATCH = 128


class UnfoldBmm(nn.Module):
    """The usual formulation, written plainly: unfold, put positions first, one bmm."""

    def __init__(self, cin, cout, size, k, padding):
        super().__init__()
        self.k, self.padding, self.cout = k, padding, cout
        self.out = conv_output_size(size, k, 1, padding)
        self.weight = nn.Parameter(torch.randn(self.out * self.out, cin * k * k, cout) * 0.1)
        self.bias = nn.Parameter(torch.zeros(cout, self.out, self.out))

    def forward(self, x):
        patches = F.unfold(x, self.k, padding=self.padding)  # (B, K, L)
        out = torch.bmm(patches.permute(2, 0, 1), self.weight)  # (L, B, O)
        return out.permute(1, 2, 0).reshape(x.shape[0], self.cout, self.out, self.out) + self.bias


def make_layer(kind, shape, device, input_grad=True):
    cin, cout, size, k, padding = shape
    if kind == "conv2d":
        layer = nn.Conv2d(cin, cout, k, padding=padding)
    elif kind == "psx_lc":
        layer = LocallyConnected2d(cin, cout, (size, size), k, 1, padding)
    else:
        layer = UnfoldBmm(cin, cout, size, k, padding)
    # Channels-last, as psx's CNNs run both arms.
    x = torch.randn(BATCH, cin, size, size, device=device).contiguous(memory_format=torch.channels_last)
    return layer.to(device), x.requires_grad_(input_grad)


def step(layer, x, grad, device):
    """One training-like pass: gradients cleared as an optimizer's zero_grad(set_to_none) does, then
    forward and backward from a dense upstream gradient (what the next layer of a network sends)."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x).backward(grad)
    if device == "cuda":
        torch.cuda.synchronize()


def upstream_gradient(out):
    """The same dense random gradient for every kind, in the memory layout of the layer's own output
    (the layout a following ReLU or pooling layer sends it back in)."""
    generator = torch.Generator().manual_seed(0)
    return torch.empty_like(out).copy_(torch.randn(out.shape, generator=generator))


def time_layers(kinds, shape, device, repeats, input_grad=True):
    """Median seconds of one pass for each kind, the kinds interleaved repeat by repeat so that a
    slow moment of the machine falls on all of them alike. input_grad=False: a network's first
    layer, whose input (the data) needs no gradient."""
    layers = {kind: make_layer(kind, shape, device, input_grad) for kind in kinds}
    grads = {kind: upstream_gradient(layer(x)) for kind, (layer, x) in layers.items()}
    for kind, (layer, x) in layers.items():
        for _ in range(3):
            step(layer, x, grads[kind], device)
    times = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind, (layer, x) in layers.items():
            start = time.perf_counter()
            step(layer, x, grads[kind], device)
            times[kind].append(time.perf_counter() - start)
    return {kind: statistics.median(t) for kind, t in times.items()}


def memory_profile(kind, shape, device):
    """(peak, largest allocation by one op) in bytes during one forward+backward, from the torch
    profiler's per-op allocator records in time order. Scratch memory that a math library
    allocates itself (oneDNN's, inside conv) is not seen on CPU; on CUDA the peak is
    torch.cuda.max_memory_allocated."""
    layer, x = make_layer(kind, shape, device)
    grad = upstream_gradient(layer(x))
    step(layer, x, grad, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with torch.autograd.profiler.profile(profile_memory=True, use_kineto=False) as prof:
        step(layer, x, grad, device)
    current = peak = largest = 0
    for event in sorted(prof.function_events, key=lambda e: e.time_range.start):
        change = event.self_cuda_memory_usage if device == "cuda" else event.self_cpu_memory_usage
        current += change
        peak, largest = max(peak, current), max(largest, change)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    return peak, largest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    args = parser.parse_args()
    shapes, repeats = (SHAPES[:1], 2) if args.quick else (SHAPES, args.repeats)

    print(f"# LocallyConnected2d vs Conv2d, batch {BATCH}, forward+backward, median of {repeats}")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    print(f"{'shape':<26}{'conv2d ms':>10}{'psx_lc ms':>10}{'ratio':>7}{'unfold_bmm':>11}{'ratio':>7}"
          f"{'conv MB':>9}{'lc MB':>8}{'lc max':>8}{'unfolded':>9}")
    results = []
    for shape in shapes:
        cin, cout, size, k, padding = shape
        times = time_layers(["conv2d", "psx_lc", "unfold_bmm"], shape, args.device, repeats)
        memory = {kind: memory_profile(kind, shape, args.device) for kind in ["conv2d", "psx_lc"]}
        out = conv_output_size(size, k, 1, padding)
        unfolded_mb = BATCH * cin * k * k * out * out * 4 / 2**20
        row = {
            "shape": f"{cin}->{cout} {size}x{size} k{k} p{padding}",
            "ms": {kind: t * 1e3 for kind, t in times.items()},
            "lc_over_conv": times["psx_lc"] / times["conv2d"],
            "unfold_bmm_over_conv": times["unfold_bmm"] / times["conv2d"],
            "peak_mb": {kind: m[0] / 2**20 for kind, m in memory.items()},
            "largest_alloc_mb": {kind: m[1] / 2**20 for kind, m in memory.items()},
            "unfolded_input_mb": unfolded_mb,
        }
        results.append(row)
        print(f"{row['shape']:<26}{row['ms']['conv2d']:>10.2f}{row['ms']['psx_lc']:>10.2f}{row['lc_over_conv']:>6.2f}x"
              f"{row['ms']['unfold_bmm']:>11.2f}{row['unfold_bmm_over_conv']:>6.2f}x"
              f"{row['peak_mb']['conv2d']:>9.1f}{row['peak_mb']['psx_lc']:>8.1f}{row['largest_alloc_mb']['psx_lc']:>8.1f}"
              f"{unfolded_mb:>9.1f}")
    print("# MB: peak torch-allocated memory of one pass (oneDNN's own scratch inside conv not seen on CPU);")
    print("# 'lc max' is psx_lc's largest allocation by one op, 'unfolded' the size of the unfolded input.")
    print("# targets: psx_lc at most 3x conv2d at every shape (issue 2), at most 2x at cnn_unshared's shapes (issue 7, scripts/bench.py)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
