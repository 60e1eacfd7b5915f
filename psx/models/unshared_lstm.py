"""An LSTM layer with its own weights at every time step, as one autograd Function.

Autograd over a Python step loop records about ten small ops per step and replays each in the
backward pass, one weight-gradient matmul per step included. This Function runs the same cell
math (PyTorch's gate order i, f, g, o and formulas) with a hand-written backward pass: per step
only the ops the recurrence needs, with the input projections and all weight gradients done as
one batched matmul over the steps. tests/test_rnn.py checks it against nn.LSTM and with
gradcheck in float64.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class UnsharedLSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh):
        """x (T, B, in); weight_ih (T, 4H, in); weight_hh (T, 4H, H); biases (T, 4H) -> h (T, B, H).
        Starts from zero hidden and cell states."""
        steps, batch, _ = x.shape
        hidden = weight_hh.shape[2]
        # Pre-activations of all steps' input projections in one batched matmul; the recurrent
        # term is added in place step by step.
        pre = torch.baddbmm((bias_ih + bias_hh).unsqueeze(1), x, weight_ih.transpose(1, 2))
        gates = torch.empty_like(pre)                  # i, f, o after sigmoid; g after tanh
        h = x.new_zeros(steps + 1, batch, hidden)      # h[0] and c[0]: the zero initial state
        c = x.new_zeros(steps + 1, batch, hidden)
        tanh_c = x.new_empty(steps, batch, hidden)
        g_slice = slice(2 * hidden, 3 * hidden)
        for t in range(steps):
            pre[t].addmm_(h[t], weight_hh[t].t())
            # g = tanh(x) as 2 sigmoid(2x) - 1: one sigmoid over all four gates and two cheap
            # scalings cost well under half of a separate tanh over a strided slice on CPU.
            pre[t, :, g_slice].mul_(2)
            torch.sigmoid(pre[t], out=gates[t])
            gates[t, :, g_slice].mul_(2).sub_(1)
            i, f, g, o = gates[t].chunk(4, 1)
            torch.mul(f, c[t], out=c[t + 1])
            c[t + 1].addcmul_(i, g)
            torch.tanh(c[t + 1], out=tanh_c[t])
            torch.mul(o, tanh_c[t], out=h[t + 1])
        ctx.save_for_backward(x, weight_ih, weight_hh, gates, h, c, tanh_c)
        return h[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        x, weight_ih, weight_hh, gates, h, c, tanh_c = ctx.saved_tensors
        steps, batch, hidden = tanh_c.shape
        grad_pre = torch.empty_like(gates)
        dh = torch.zeros_like(h[0])
        dc = torch.zeros_like(c[0])
        ones = torch.ones_like(dc)
        # Step by step, on one step's tensors at a time (they stay in cache): a pass over all
        # steps' gates at once costs more than the few extra small ops.
        for t in reversed(range(steps)):
            i, f, g, o = gates[t].chunk(4, 1)
            dh += grad_h[t]
            dc_from_dh = torch.addcmul(ones, tanh_c[t], tanh_c[t], value=-1).mul_(o)   # o * tanh'(c)
            dc.addcmul_(dh, dc_from_dh)
            step_grad = grad_pre[t]                      # d loss / d pre-activation, filled in place
            grad_i, grad_f, grad_g, grad_o = step_grad.chunk(4, 1)
            torch.mul(dc, g, out=grad_i)
            torch.mul(dc, c[t], out=grad_f)
            torch.mul(dc, i, out=grad_g)
            torch.mul(dh, tanh_c[t], out=grad_o)
            derivative = torch.addcmul(gates[t], gates[t], gates[t], value=-1)   # sigmoid': s - s^2
            torch.addcmul(ones, g, g, value=-1, out=derivative[:, 2 * hidden:3 * hidden])  # tanh': 1 - g^2
            step_grad.mul_(derivative)
            dc.mul_(f)
            dh = step_grad @ weight_hh[t]
        grad_pre_t = grad_pre.transpose(1, 2)                              # (T, 4H, B)
        grad_x = torch.bmm(grad_pre, weight_ih) if ctx.needs_input_grad[0] else None
        grad_weight_ih = torch.bmm(grad_pre_t, x)
        grad_weight_hh = torch.bmm(grad_pre_t, h[:-1])
        grad_bias = grad_pre.sum(1)  # both biases are summed into every pre-activation
        return grad_x, grad_weight_ih, grad_weight_hh, grad_bias, grad_bias.clone()
