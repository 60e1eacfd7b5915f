import pytest
import torch

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models import build_model, param_counts
from psx.models.families.rnn import RNNConfig
from test_models import DIGITS

MNIST_LIKE = DataSpec(name="mnist", input_shape=(1, 28, 28), num_classes=10)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_unshared_with_every_steps_cell_set_to_the_shared_weights_equals_shared(cell, layers):
    torch.manual_seed(0)
    shared = build_model(RNNConfig(arm="shared", cell=cell, num_layers=layers, hidden_size=16), DIGITS).double()
    unshared = build_model(RNNConfig(arm="unshared", cell=cell, num_layers=layers, hidden_size=16), DIGITS).double()
    for index, layer in enumerate(unshared.layers):
        layer.copy_from_fused(shared.rnn, index)
    unshared.head.load_state_dict(shared.head.state_dict())
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(unshared(x), shared(x), rtol=1e-10, atol=1e-10)
    # Gradients of the per-step copies sum to the shared cell's gradient.
    shared(x).sum().backward()
    unshared(x).sum().backward()
    torch.testing.assert_close(unshared.layers[0].weight_hh.grad.sum(0), shared.rnn.weight_hh_l0.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_parameter_counts_are_steps_times_the_shared_cell(cell, gates):
    hidden, steps, inputs = 32, 28, 28
    per_cell = gates * hidden * (inputs + hidden + 2)
    head = hidden * 10 + 10
    shared = param_counts(build_model(RNNConfig(arm="shared", cell=cell, hidden_size=hidden), MNIST_LIKE))
    unshared = param_counts(build_model(RNNConfig(arm="unshared", cell=cell, hidden_size=hidden), MNIST_LIKE))
    assert shared["params/unique"] == per_cell + head
    assert shared["params/unshared_equiv"] == steps * per_cell + head == unshared["params/unique"]
    assert unshared["params/unshared_equiv"] == unshared["params/unique"]


def test_rnn_on_token_data_is_a_clear_error():
    tokens = DataSpec(name="ptb", input_shape=(35,), num_classes=10000, kind="tokens")
    with pytest.raises(PsxError, match="takes images"):
        build_model(RNNConfig(arm="shared"), tokens)


def test_unshared_lstm_function_passes_gradcheck_in_float64():
    from psx.models.unshared_lstm import UnsharedLSTMFunction

    torch.manual_seed(0)
    steps, batch, inputs, hidden = 4, 3, 5, 6
    shapes = [(steps, batch, inputs), (steps, 4 * hidden, inputs), (steps, 4 * hidden, hidden), (steps, 4 * hidden), (steps, 4 * hidden)]
    args = [torch.randn(*shape, dtype=torch.float64).mul(0.5).requires_grad_() for shape in shapes]
    assert torch.autograd.gradcheck(UnsharedLSTMFunction.apply, args)


def test_unshared_lstm_function_equals_autograd_over_the_step_loop():
    """The hand-written backward pass gives the gradients autograd gives over the plain loop."""
    torch.manual_seed(0)
    layer = build_model(RNNConfig(arm="unshared", cell="lstm", hidden_size=16), MNIST_LIKE).double().layers[0]
    x = torch.randn(7, 28, 28, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(7, 28, 16, dtype=torch.float64)  # a gradient for every step's output
    results = []
    for forward in (layer.forward, layer.step_loop):
        layer.zero_grad()
        x.grad = None
        out = forward(x)
        (out * weights).sum().backward()
        results.append([out.detach(), x.grad, *(p.grad for p in layer.parameters())])
    for fast, reference in zip(*results):
        torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-12)


def test_unshared_lstm_function_skips_frozen_weights_and_keeps_the_other_gradients():
    torch.manual_seed(0)
    layer = build_model(RNNConfig(arm="unshared", cell="lstm", hidden_size=8), DIGITS).double().layers[0]
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    layer(x).sum().backward()
    full = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    layer.weight_ih.requires_grad_(False)
    layer.bias_hh.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.weight_ih.grad is None and layer.bias_hh.grad is None
    for name in ("weight_hh", "bias_ih"):
        torch.testing.assert_close(getattr(layer, name).grad, full[name], rtol=0, atol=0)
