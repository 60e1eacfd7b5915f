"""Federated learning, fast tier: Flower's own strategy and message classes driven in-process
(no simulation engine), on the bundled digits."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

pytest.importorskip("flwr", reason='the federated extra is not installed (pip install -e ".[federated]")')

from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict  # noqa: E402

from psx.checkpoint import load_checkpoint  # noqa: E402
from psx.config import validate  # noqa: E402
from psx.data import build_data  # noqa: E402
from psx.errors import PsxError  # noqa: E402
from psx.federated.client import ClientSetup, FederatedClient  # noqa: E402
from psx.federated.run import ShippedData, client_data  # noqa: E402
from psx.federated.sharing import payload_bytes, shared_keys  # noqa: E402
from psx.federated.strategy import RoundPlan, make_strategy  # noqa: E402
from psx.hydra_app import config_dir  # noqa: E402
from psx.models import build_model  # noqa: E402
from psx.tasks import task_for  # noqa: E402
from psx.optim import make_optimizer  # noqa: E402


@pytest.fixture(autouse=True)
def server_identity():
    """Who sends the messages: the engine sets this for a run (as run_simulation does); here the
    test plays the SuperLink."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def composed(*overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def federation(cfg, state_dir: Path):
    """The server's strategy and one ClientApp, wired as federated_fit wires them."""
    data = build_data(cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.spec)
    keys = shared_keys(model, str(cfg.federated.shared), list(cfg.federated.local_layers))
    local = client_data(data, cfg.federated)
    setup = ClientSetup(
        build_model=lambda: build_model(cfg.model, data.spec), initial_state=model.state_dict(), frozen=[],
        task=task_for(data.spec, cfg.model), trainer=cfg.trainer, source=ShippedData(local), source_key=str(state_dir),
        classes=10, seed=cfg.seed, local_epochs=cfg.federated.local_epochs, shared=keys, state_dir=state_dir,
        threads=1,
    )
    clients = cfg.federated.clients
    plan = RoundPlan(seed=cfg.seed, clients=clients, per_round=clients, node_of={p: 1000 + p for p in range(clients)})
    strategy = make_strategy(plan, cfg.federated.proximal_mu)
    return model, keys, local, FederatedClient(setup), strategy


def one_round(model, keys, client, strategy):
    """configure_train -> each client's ClientApp train -> aggregate_train, as one engine round."""
    start = ArrayRecord({k: model.state_dict()[k] for k in keys})
    messages = list(strategy.configure_train(1, start, ConfigRecord(), grid=None))
    replies = []
    for message in messages:
        partition = message.metadata.dst_node_id - 1000
        context = Context(run_id=1, node_id=message.metadata.dst_node_id, node_config={"partition-id": partition},
                          state=RecordDict(), run_config={})
        replies.append(client.app()(message, context))
    arrays, _ = strategy.aggregate_train(1, list(reversed(replies)))  # arrival order must not matter
    return messages, replies, arrays


def test_one_fedavg_round_equals_one_centralised_gradient_step(tmp_path):
    # IID equal-size clients (1,200 examples / 4), full-batch plain gradient descent, one local step,
    # every client in the round: the weighted average of the clients' steps is the step on the union.
    cfg = composed("federated=fedavg", "dataset.train_size=1200", "federated.clients=4", "federated.partition=iid",
                   "federated.local_epochs=1", "trainer.optimizer=sgd", "trainer.momentum=0", "trainer.lr=0.5",
                   "trainer.batch_size=300")
    model, keys, local, client, strategy = federation(cfg, tmp_path)
    assert [len(p) for p in local.partitions] == [300, 300, 300, 300]
    _, _, arrays = one_round(model, keys, client, strategy)
    federated = arrays.to_torch_state_dict()

    union_x = torch.cat([p.batch(slice(None))[0] for p in local.partitions])
    union_y = torch.cat([p.y for p in local.partitions])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(cfg.trainer, model.parameters())
    loss = torch.nn.functional.cross_entropy(model(union_x), union_y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    central = model.state_dict()
    assert set(federated) == set(central)
    moved = max((central[k] - federated[k]).abs().max().item() for k in central)
    assert moved < 1e-6
    assert max((central[k] - initial[k]).abs().max().item() for k in central) > 1e-3  # a real step


def test_fedper_heads_never_leave_their_client(tmp_path):
    cfg = composed("federated=fedper", "federated.clients=3", "federated.partition=dirichlet", "federated.alpha=0.5",
                   "trainer.batch_size=64")
    model, keys, local, client, strategy = federation(cfg, tmp_path)
    head = {k for k in model.state_dict() if k.startswith("head.")}
    trunk = set(model.state_dict()) - head
    assert head and set(keys) == trunk
    messages, replies, arrays = one_round(model, keys, client, strategy)
    for message in [*messages, *replies]:
        assert set(message.content["arrays"].keys()) == trunk  # both ways, only trunk tensors travel
    assert set(arrays.keys()) == trunk  # the server's aggregate holds no head
    for partition in range(3):  # each client kept its own trained head, on its side
        kept = load_checkpoint(tmp_path / str(partition) / "round-1.pt")  # checked against its digest
        assert set(kept) == head
        assert not torch.equal(kept["head.2.weight"], model.state_dict()["head.2.weight"])
    sent = sum(payload_bytes(m.content["arrays"]) for m in messages)
    assert strategy.traffic.sent == sent and strategy.traffic.received == sent  # same tensors back
    trunk_numbers = sum(model.state_dict()[k].numel() for k in trunk)
    assert sent >= 3 * trunk_numbers * 4  # float32 data plus Flower's per-tensor header


def test_local_only_sends_nothing(tmp_path):
    cfg = composed("federated=local", "federated.clients=2")
    model, keys, _, client, strategy = federation(cfg, tmp_path)
    assert keys == []
    _, replies, arrays = one_round(model, keys, client, strategy)
    assert len(arrays.keys()) == 0 and strategy.traffic.total == 0
    assert set(load_checkpoint(tmp_path / "0" / "round-1.pt")) == set(model.state_dict())


def test_a_client_error_fails_the_round(tmp_path):
    cfg = composed("federated=fedavg", "federated.clients=2")
    model, keys, _, client, strategy = federation(cfg, tmp_path)
    messages = list(strategy.configure_train(1, ArrayRecord({k: model.state_dict()[k] for k in keys}),
                                             ConfigRecord(), grid=None))
    from flwr.app import Error, Message

    failed = Message(Error(code=0, reason="Traceback ...\nRuntimeError: disk full"), reply_to=messages[0])
    with pytest.raises(PsxError, match="1 of 2 clients failed in training: RuntimeError: disk full"):
        strategy.aggregate_train(1, [failed])
    with pytest.raises(PsxError, match="only 0 of 2 clients replied"):
        strategy.aggregate_train(1, [])


@pytest.mark.parametrize("override, message", [
    ("federated.alpha=0", "federated.alpha must be > 0"),
    ("federated.alpha=-1", "federated.alpha must be > 0"),
    ("federated.partition=pathological", "unknown federated.partition 'pathological'"),
    ("federated.clients=0", "federated.clients must be >= 1"),
    ("federated.fraction=1.5", r"federated.fraction must be in \(0, 1\]"),
    ("dataset.train_size=10", "federated.clients=20 is more than the 10 training examples"),
])
def test_bad_federated_settings_are_one_line_errors(override, message):
    with pytest.raises(PsxError, match=message):
        validate(composed("federated=fedavg", "federated.clients=20", override))


def test_more_clients_than_examples_fails_before_training():
    from psx.federated.partition import partition

    with pytest.raises(PsxError, match="federated.clients=5 needs at least 5 training examples, the data has 3"):
        partition(torch.tensor([0, 1, 2]), 5, "iid", 0)


def test_without_flower_the_error_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else real(name, *a))
    with pytest.raises(PsxError, match=r'federated=fedprox needs .*pip install -e "\.\[federated\]"'):
        validate(composed("federated=fedprox"))
    validate(composed())  # the centralised default needs no Flower


def test_large_data_sets_travel_as_a_recipe_that_draws_the_same_partition():
    from psx.federated.run import DataRecipe, _plain

    cfg = composed("federated=fedper", "federated.partition=dirichlet", "federated.alpha=0.3", "seed=2")
    expected = client_data(build_data(cfg.dataset), cfg.federated)
    loaded = DataRecipe(_plain(cfg.dataset), str(cfg.paths.data_dir), _plain(cfg.federated))()
    assert len(loaded.partitions) == cfg.federated.clients
    for a, b in zip(expected.partitions, loaded.partitions):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(expected.test.y, loaded.test.y)


def test_one_evaluation_stands_for_every_client_when_all_is_shared(tmp_path):
    from psx.federated.evaluation import class_totals, round_metrics
    from psx.federated.partition import label_distribution
    from psx.federated.strategy import NodeView

    cfg = composed("federated=fedavg", "federated.clients=3", "federated.partition=dirichlet", "federated.alpha=0.3")
    model, keys, local, client, strategy = federation(cfg, tmp_path)
    arrays = ArrayRecord({k: model.state_dict()[k] for k in keys})

    def evaluations(grid):
        replies = []
        for message in strategy.configure_evaluate(1, arrays, ConfigRecord(), grid):
            partition = message.metadata.dst_node_id - 1000
            context = Context(run_id=1, node_id=message.metadata.dst_node_id, node_config={"partition-id": partition},
                              state=RecordDict(), run_config={})
            replies.append(client.app()(message, context))
        return replies

    labels = torch.cat([p.y for p in local.partitions])
    sizes = [len(p) for p in local.partitions]
    offsets = torch.tensor([0, *sizes]).cumsum(0)
    shares = label_distribution(labels, [torch.arange(offsets[i], offsets[i + 1]) for i in range(3)], 10)
    totals = class_totals(local.val.y, 10), class_totals(local.test.y, 10)
    strategy.plan.same_model = False
    every = round_metrics(evaluations(NodeView([1000, 1001, 1002])), shares, *totals)
    strategy.plan.same_model = True
    one = evaluations(grid=None)
    assert len(one) == 1
    assert round_metrics(one, shares, *totals) == pytest.approx(every, abs=1e-12)
    assert every["val/acc/client_worst"] < every["val/acc/client_mean"]  # skewed clients see different accuracy
