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
        # Every per-step view made up front, by one unbind each: a view made by indexing inside
        # the loop costs more Python and dispatch time than the small op that uses it.
        pre_t, gates_t, h_t, c_t, tanh_c_t = (v.unbind(0) for v in (pre, gates, h, c, tanh_c))
        pre_g_t, gates_g_t = pre[..., g_slice].unbind(0), gates[..., g_slice].unbind(0)
        i_t, f_t, g_t, o_t = (part.unbind(0) for part in gates.chunk(4, 2))
        weight_hh_t = weight_hh.transpose(1, 2).unbind(0)
        for t in range(steps):
            pre_t[t].addmm_(h_t[t], weight_hh_t[t])
            # g = tanh(x) as 2 sigmoid(2x) - 1: one sigmoid over all four gates and two cheap
            # scalings cost well under half of a separate tanh over a strided slice on CPU.
            pre_g_t[t].mul_(2)
            torch.sigmoid(pre_t[t], out=gates_t[t])
            gates_g_t[t].mul_(2).sub_(1)
            torch.mul(f_t[t], c_t[t], out=c_t[t + 1])
            c_t[t + 1].addcmul_(i_t[t], g_t[t])
            torch.tanh(c_t[t + 1], out=tanh_c_t[t])
            torch.mul(o_t[t], tanh_c_t[t], out=h_t[t + 1])
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
        g_slice = slice(2 * hidden, 3 * hidden)
        gates_t, c_t, tanh_c_t, grad_h_t, grad_pre_t, weight_hh_t = (
            v.unbind(0) for v in (gates, c, tanh_c, grad_h, grad_pre, weight_hh))
        i_t, f_t, g_t, o_t = (part.unbind(0) for part in gates.chunk(4, 2))
        grad_i_t, grad_f_t, grad_g_t, grad_o_t = (part.unbind(0) for part in grad_pre.chunk(4, 2))
        # Step by step, on one step's tensors at a time (they stay in cache): a pass over all
        # steps' gates at once costs more than the few extra small ops.
        for t in reversed(range(steps)):
            dh += grad_h_t[t]
            dc_from_dh = torch.addcmul(ones, tanh_c_t[t], tanh_c_t[t], value=-1).mul_(o_t[t])  # o * tanh'(c)
            dc.addcmul_(dh, dc_from_dh)
            # d loss / d gate activations, written into this step's slice of grad_pre ...
            torch.mul(dc, g_t[t], out=grad_i_t[t])
            torch.mul(dc, c_t[t], out=grad_f_t[t])
            torch.mul(dc, i_t[t], out=grad_g_t[t])
            torch.mul(dh, tanh_c_t[t], out=grad_o_t[t])
            # ... times the activations' derivatives: s - s^2 for the sigmoids, 1 - g^2 for tanh
            derivative = torch.addcmul(gates_t[t], gates_t[t], gates_t[t], value=-1)
            torch.addcmul(ones, g_t[t], g_t[t], value=-1, out=derivative[:, g_slice])
            grad_pre_t[t].mul_(derivative)
            dc.mul_(f_t[t])
            dh = grad_pre_t[t] @ weight_hh_t[t]
        # The rest only where a gradient is wanted (the input of a first layer, frozen weights).
        need_x, need_ih, need_hh, need_bias_ih, need_bias_hh = ctx.needs_input_grad
        grad_pre_by_gate = grad_pre.transpose(1, 2)                        # (T, 4H, B)
        grad_x = torch.bmm(grad_pre, weight_ih) if need_x else None
        grad_weight_ih = torch.bmm(grad_pre_by_gate, x) if need_ih else None
        grad_weight_hh = torch.bmm(grad_pre_by_gate, h[:-1]) if need_hh else None
        # Both biases are summed into every pre-activation; each gets a tensor of its own, as the
        # parameters' .grad must not share one.
        grad_bias_ih = grad_pre.sum(1) if need_bias_ih else None
        grad_bias_hh = grad_pre.sum(1) if need_bias_hh else None
        return grad_x, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
