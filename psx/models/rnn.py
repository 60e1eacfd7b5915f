"""Recurrent classifiers over image rows: one cell reused at every step vs a cell per step.

An image (C, H, W) is read as H steps of C*W features (28 steps of 28 pixels for MNIST, 8 of 8
for digits); the class is predicted from the top layer's last hidden state.

`rnn_shared` uses PyTorch's fused nn.RNN / nn.GRU / nn.LSTM. `rnn_unshared` has the same cell
math with its own weights at every step, stacked in one tensor per layer (steps, gates*hidden, in):
the input projections of all steps are one batched matmul, the recurrence one matmul per step.
The LSTM (the default cell) runs as one autograd Function with a hand-written backward pass
(unshared_lstm.py); the other cells as autograd over the step loop.
Gate order and formulas follow PyTorch's, so copying the shared weights to every step reproduces
the shared model exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models.families.rnn import Cell, RNNConfig
from psx.models.eager import run_eagerly_under_compile
from psx.models.unshared_lstm import UnsharedLSTMFunction

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
FUSED = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def _as_sequence(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, C*W): one step per image row."""
    batch, channels, height, width = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, height, channels * width)


class PerStepRecurrentLayer(nn.Module):
    """One recurrent layer whose weights differ at every time step."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, steps: int):
        super().__init__()
        self.cell, self.hidden_size, self.steps = cell, hidden_size, steps
        gates = GATES[cell] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(steps, gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(steps, gates, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(steps, gates))
        self.bias_hh = nn.Parameter(torch.empty(steps, gates))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.RNN/GRU/LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @torch.no_grad()
    def copy_from_fused(self, fused: nn.Module, layer: int) -> None:
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            source = getattr(fused, f"{name}_l{layer}")
            getattr(self, name).copy_(source.unsqueeze(0).expand_as(getattr(self, name)))

    @run_eagerly_under_compile
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, in) -> (B, T, hidden)
        if self.cell == "lstm" and not torch.is_autocast_enabled(x.device.type):
            weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
            return UnsharedLSTMFunction.apply(x.transpose(0, 1), *weights).transpose(0, 1)
        return self.step_loop(x)

    def step_loop(self, x: torch.Tensor) -> torch.Tensor:
        """The recurrence as plain autograd ops, step by step: every cell type, and LSTM under
        autocast (the Function above runs in the weights' dtype)."""
        batch = x.shape[0]
        # All steps' input projections at once: (T, B, in) @ (T, in, gates) -> (T, B, gates).
        # Outside GRU both biases only ever appear summed, so they are added here once for all steps.
        bias = self.bias_ih if self.cell == "gru" else self.bias_ih + self.bias_hh
        projected = torch.baddbmm(bias.unsqueeze(1), x.transpose(0, 1), self.weight_ih.transpose(1, 2))
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size) if self.cell == "lstm" else None
        outputs = []
        # unbind once: indexing step t inside the loop would make autograd build a full-size zero
        # gradient for every step's slice (quadratic in the number of steps); unbind's backward is one stack.
        for gi, w_hh, b_hh in zip(projected.unbind(0), self.weight_hh.unbind(0), self.bias_hh.unbind(0)):
            h, c = self._step(gi, w_hh, b_hh, h, c)
            outputs.append(h)
        return torch.stack(outputs, 1)

    def _step(self, gi, w_hh, b_hh, h, c):
        if self.cell == "rnn":
            return torch.tanh(torch.addmm(gi, h, w_hh.t())), None
        if self.cell == "gru":
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = torch.addmm(b_hh, h, w_hh.t()).chunk(3, 1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return n + z * (h - n), None  # (1 - z) * n + z * h
        i, f, g, o = torch.addmm(gi, h, w_hh.t()).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class RecurrentClassifier(nn.Module):
    def __init__(self, cfg: RNNConfig, spec: DataSpec):
        super().__init__()
        if spec.kind != "images":
            raise PsxError(f"model {cfg.name} reads images row by row; {spec.name} holds {spec.kind}")
        channels, height, width = spec.input_shape
        self.steps, self.shared = height, cfg.arm == "shared"
        cell = Cell(cfg.cell).value
        input_size = channels * width
        if self.shared:
            self.rnn = FUSED[cell](input_size, cfg.hidden_size, cfg.num_layers, batch_first=True,
                                       dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        else:
            sizes = [input_size] + [cfg.hidden_size] * (cfg.num_layers - 1)
            self.layers = nn.ModuleList(PerStepRecurrentLayer(cell, n, cfg.hidden_size, height) for n in sizes)
            self.between_layers = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, spec.num_classes)

    def forward(self, x):
        seq = _as_sequence(x)
        if self.shared:
            out, _ = self.rnn(seq)
        else:
            out = seq
            for index, layer in enumerate(self.layers):
                out = layer(self.between_layers(out) if index else out)
        return self.head(out[:, -1])

    def parameter_reuse(self) -> dict[str, float]:
        """The shared cell runs at every step: an unshared twin holds `steps` copies of it."""
        if not self.shared:
            return {}
        return {f"rnn.{name}": self.steps for name, _ in self.rnn.named_parameters()}
