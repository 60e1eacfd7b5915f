"""Penn Treebank on the real files (from PSX_DATA_DIR or CI's copy, copied into a temporary folder)."""
import pytest
import torch
from conftest import copy_into

from psx.data import build_data
from psx.data.registry import default_config
from psx.data.sets.ptb import SOURCE, load_ptb, read_words
from psx.data.tensors import Tokens
from psx.errors import PsxError


def ptb_cfg(**overrides):
    return default_config("ptb", **overrides)


def test_ptb_token_counts_and_train_only_vocabulary(ptb_root):
    data = build_data(ptb_cfg(), ptb_root)
    assert (len(data.train), len(data.val), len(data.test)) == (929_589, 73_760, 82_430)
    assert data.spec.kind == "tokens" and data.spec.vocab_size == 10_000 and len(data.vocab) == 10_000
    assert len(set(data.vocab)) == 10_000 and "<unk>" in data.vocab and "<eos>" in data.vocab
    eos = data.vocab.index("<eos>")
    assert [(split.ids == eos).sum().item() for split in (data.train, data.val, data.test)] == [42_068, 3_370, 3_761]
    assert (data.train.ids == data.vocab.index("<unk>")).sum().item() == 45_020
    # Every valid/test word is in the train vocabulary, so decoding gives the files' words back.
    folder = ptb_root / "PennTreebank"
    for split, name in [(data.val, "ptb.valid.txt"), (data.test, "ptb.test.txt")]:
        assert [data.vocab[i] for i in split.ids[:500].tolist()] == read_words(folder / name)[:500]
        assert set(read_words(folder / name)) <= set(data.vocab)


def test_ptb_batches_into_streams_and_bptt_windows(ptb_root):
    data = build_data(ptb_cfg(), ptb_root)
    streams = data.train.streams(20)
    assert streams.shape == (929_589 // 20, 20)
    assert torch.equal(streams[:, 1], data.train.ids[len(streams):2 * len(streams)])  # column = contiguous piece
    windows = list(Tokens.windows(streams, 35))
    x, y = windows[0]
    assert x.shape == (35, 20) and torch.equal(y[:-1], x[1:])
    assert sum(len(x) for x, _ in windows) == len(streams) - 1 and len(windows[-1][0]) <= 35


def test_ptb_train_size_is_a_contiguous_prefix_and_eval_never_shrinks(ptb_root):
    full = build_data(ptb_cfg(), ptb_root)
    small = build_data(ptb_cfg(train_size=10_000), ptb_root)
    assert torch.equal(small.train.ids, full.train.ids[:10_000])
    assert torch.equal(small.val.ids, full.val.ids) and torch.equal(small.test.ids, full.test.ids)
    assert small.vocab == full.vocab
    with pytest.raises(PsxError, match="only 929,589 training tokens"):
        build_data(ptb_cfg(train_size=1_000_000), ptb_root)


def test_ptb_val_tokens_validates_on_a_prefix_and_the_test_split_stays_whole(ptb_root):
    full = build_data(ptb_cfg(), ptb_root)
    small = build_data(ptb_cfg(val_tokens=5_000, train_size=10_000), ptb_root)
    assert torch.equal(small.val.ids, full.val.ids[:5_000]) and torch.equal(small.test.ids, full.test.ids)
    assert torch.equal(small.train.ids, full.train.ids[:10_000])
    with pytest.raises(PsxError, match="only 73,760 validation tokens"):
        build_data(ptb_cfg(val_tokens=73_761), ptb_root)


def test_ptb_corrupt_file_is_reported(tmp_path):
    root = copy_into(tmp_path, "ptb")
    valid = root / "PennTreebank/ptb.valid.txt"
    valid.write_text(valid.read_text().replace(" the ", " teh ", 1))
    with pytest.raises(PsxError, match=r"ptb: .*ptb.valid.txt is corrupt"):
        load_ptb(root)
    assert not SOURCE.cache_path(root).exists()
