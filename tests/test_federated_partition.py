"""Client partitions (no Flower needed): every example once, seeded, and as skewed as asked."""
import pytest
import torch

from psx.errors import PsxError
from psx.federated.partition import label_distribution, partition

LABELS = torch.arange(2000) % 10  # 200 examples of each of 10 classes


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_every_example_goes_to_exactly_one_client_and_the_draw_is_seeded(scheme):
    parts = partition(LABELS, 7, scheme, seed=3, alpha=0.5)
    assert len(parts) == 7
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(len(LABELS)))
    again = partition(LABELS, 7, scheme, seed=3, alpha=0.5)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    other = partition(LABELS, 7, scheme, seed=4, alpha=0.5)
    assert not all(torch.equal(a, b) for a, b in zip(parts, other))


def test_iid_clients_are_equal_sized_and_hold_every_class():
    parts = partition(LABELS, 4, "iid", seed=0)
    assert [len(p) for p in parts] == [500] * 4
    assert (label_distribution(LABELS, parts, 10) > 0).all()


def test_a_smaller_dirichlet_alpha_gives_more_skewed_clients():
    def classes_per_client(alpha):
        shares = label_distribution(LABELS, partition(LABELS, 10, "dirichlet", seed=0, alpha=alpha), 10)
        return (shares > 0.05).sum(1).float().mean().item()

    skewed, mild, near_iid = classes_per_client(0.1), classes_per_client(1.0), classes_per_client(100.0)
    assert skewed < mild < near_iid
    assert skewed <= 3 and near_iid == 10


def test_shards_give_each_client_two_label_sorted_shards():
    parts = partition(LABELS, 10, "shards", seed=0)  # 20 shards of 100: half a class each
    shares = label_distribution(LABELS, parts, 10)
    assert ((shares > 0).sum(1) <= 2).all()


def test_impossible_partitions_are_one_line_errors():
    with pytest.raises(PsxError, match="federated.alpha must be > 0"):
        partition(LABELS, 4, "dirichlet", seed=0, alpha=0.0)
    with pytest.raises(PsxError, match="unknown federated.partition 'sorted'"):
        partition(LABELS, 4, "sorted", seed=0)
    with pytest.raises(PsxError, match="federated.clients=2001 needs at least 2001 training examples"):
        partition(LABELS, 2001, "iid", seed=0)
