"""trainer.compile=true: psx's hand-written layers run eagerly inside the compiled model, which
computes what the plain model computes."""
import inspect
import json
import re

import pytest
import torch
import torch.nn.functional as F
from psx.data.spec import DataSpec
from psx.models import build_model, locally_connected, unshared_lstm
from psx.models.families.cnn import CNNConfig
from psx.models.families.rnn import RNNConfig
from psx.models.eager import compile_model
from psx.models.rnn import PerStepRecurrentLayer


def hand_written_code():
    """(file, first line, last line) of the code compile_model must not trace."""
    spans = []
    for module in (locally_connected, unshared_lstm):
        lines, _ = inspect.getsourcelines(module)
        spans.append((inspect.getsourcefile(module), 1, len(lines)))
    lines, first = inspect.getsourcelines(PerStepRecurrentLayer)
    return spans + [(inspect.getsourcefile(PerStepRecurrentLayer), first, first + len(lines) - 1)]


def traced_lines(graphs):
    """(file, line) of the user code behind every node of the captured graphs."""
    traces = "".join(node.meta.get("stack_trace") or "" for g in graphs for node in g.graph.nodes)
    return {(file, int(line)) for file, line in re.findall(r'File "([^"]+)", line (\d+)', traces)}


DIGITS = DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10)


@pytest.mark.parametrize("config", [CNNConfig(arm="unshared"), RNNConfig(arm="unshared"), RNNConfig(arm="unshared", cell="gru")],
                         ids=["cnn_unshared", "rnn_unshared", "rnn_unshared-gru"])
def test_compiled_model_leaves_hand_written_layers_out_and_matches_eager(config):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, spec = build_model(config, DIGITS), DIGITS
    graphs = []

    def recording_backend(graph_module, example_inputs):  # runs the captured graph as it is
        graphs.append(graph_module)
        return graph_module.forward

    compiled = compile_model(model, backend=recording_backend)
    x = torch.randn(16, *spec.input_shape)
    y = torch.randint(0, spec.num_classes, (16,))
    compiled_loss = F.cross_entropy(compiled(x), y)
    compiled_loss.backward()
    compiled_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    eager_loss = F.cross_entropy(model(x), y)
    eager_loss.backward()

    torch.testing.assert_close(compiled_loss, eager_loss)
    for n, p in model.named_parameters():
        torch.testing.assert_close(compiled_grads[n], p.grad, msg=n)
    assert graphs, "nothing was compiled"
    traced = traced_lines(graphs)
    assert traced, "no stack traces recorded"
    inside = [(f, n) for f, n in traced for file, first, last in hand_written_code() if f == file and first <= n <= last]
    assert not inside, f"compiled code traced from a hand-written layer: {inside}"


def test_train_with_compile_equals_eager_run(psx):
    """The real command with inductor: same losses as the uncompiled run, to float32 rounding."""
    common = ["train", "model=cnn_unshared", "trainer.epochs=2", "dataset.train_size=200"]
    for name, extra in (("eager", []), ("compiled", ["trainer.compile=true"])):
        result = psx(*common, *extra, f"hydra.run.dir={name}")
        assert result.returncode == 0, result.stderr
    eager, compiled = (json.loads((psx.cwd / name / "summary.json").read_text()) for name in ("eager", "compiled"))
    assert compiled["status"] == "completed"
    for key in ("train/loss", "val/loss", "test/loss"):
        assert compiled["metrics"][key] == pytest.approx(eager["metrics"][key], rel=1e-4), key


def test_compiling_sweep_on_joblib_leaves_nothing_behind(psx):
    """psx stops its joblib workers after the last job; one that compiled must not leave a
    semaphore behind (tqdm's lock, reported by Python as leaked at exit)."""
    result = psx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=cnn_unshared", "seed=0,1",
                 "trainer.compile=true", "trainer.epochs=1", "dataset.train_size=100", "hydra.sweep.dir=sweep")
    assert result.returncode == 0, result.stderr
    statuses = [json.loads(p.read_text())["status"] for p in (psx.cwd / "sweep").glob("*/summary.json")]
    assert statuses == ["completed", "completed"]
    assert "leaked" not in result.stderr, result.stderr
