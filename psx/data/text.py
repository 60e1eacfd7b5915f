"""Penn Treebank, word level (Mikolov's preprocessed ptb.{train,valid,test}.txt).

Tokenisation as in pytorch/examples word_language_model: split each line on whitespace and
append `<eos>`. The vocabulary is built from the training file only (words numbered in order of
first appearance: 10,000 words including `<unk>` and `<eos>`); a word of valid/test outside it
would map to `<unk>` (PTB has none). Token ids are cached as int64 tensors.

`dataset.train_size` keeps the first `train_size` training tokens: a contiguous prefix of the
stream, not a random sample, so the text stays coherent for the recurrent state.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from psx.data import store
from psx.data.spec import TOKENS, Data, DataSpec, Tokens
from psx.errors import PsxError

VOCAB_SIZE = 10_000
SPLITS = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}


def ptb_spec(cfg: DictConfig) -> DataSpec:
    return DataSpec(name="ptb", input_shape=(), num_classes=VOCAB_SIZE, kind=TOKENS, vocab_size=VOCAB_SIZE, seq_len=cfg.bptt)


def read_words(path: Path) -> list[str]:
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words += line.split() + ["<eos>"]
    return words


def _decode(folder: Path) -> dict:
    texts = {split: read_words(folder / name) for split, name in SPLITS.items()}
    index: dict[str, int] = {}
    for word in texts["train"]:
        index.setdefault(word, len(index))
    unk = index["<unk>"]
    ids = {split: torch.tensor([index.get(w, unk) for w in words], dtype=torch.long) for split, words in texts.items()}
    return {"vocab": list(index), **ids}


def load_ptb(data_dir: str | Path, download: bool = True, verify: bool = True) -> dict:
    """{vocab: list of words (index -> word), train/valid/test: 1-D int64 token ids}."""
    source = store.get_source("ptb")
    loaded = store.cached_load(source, data_dir, download, verify, lambda: _decode(source.path(data_dir)))
    return {k: loaded[k] for k in ("vocab", "train", "valid", "test")}


def build_ptb(cfg: DictConfig, data_dir: str | Path | None) -> Data:
    spec = ptb_spec(cfg)
    corpus = load_ptb(data_dir, cfg.download, cfg.verify)
    if len(corpus["vocab"]) != VOCAB_SIZE:
        raise PsxError(f"ptb: the training file gives {len(corpus['vocab'])} distinct words, expected {VOCAB_SIZE}")
    train = corpus["train"]
    if cfg.train_size is not None:
        if cfg.train_size > len(train):
            raise PsxError(f"dataset.train_size={cfg.train_size} but ptb has only {len(train):,} training tokens")
        if cfg.train_size <= cfg.bptt:
            raise PsxError(f"dataset.train_size={cfg.train_size} tokens do not fill one bptt={cfg.bptt} window")
        train = train[: cfg.train_size].clone()  # a contiguous prefix (see the module docstring)
    return Data(spec, Tokens(train), Tokens(corpus["valid"]), Tokens(corpus["test"]), vocab=tuple(corpus["vocab"]))
