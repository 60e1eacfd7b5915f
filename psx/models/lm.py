"""Word-level language models on token streams: an LSTM (tied or untied) and a causal transformer.

The LSTM follows pytorch/examples word_language_model: embedding -> dropout -> LSTM -> dropout ->
decoder. Tying (Press & Wolf 2017, "Using the Output Embedding to Improve Language Models";
Inan et al. 2017; the `tied` arm) makes the decoder weight the very embedding Parameter, which needs
embedding size == hidden size, or a projection hidden -> embedding before the decoder
(`model.tie_projection=true`). Both variants keep the decoder bias, so
params(tied) = params(untied) - vocab x embedding_size (+ hidden x embedding for a projection).

The transformer is a pre-norm causal encoder stack with learned positions; with
the `shared` arm one block is applied at every layer (ALBERT-style cross-layer sharing),
so its parameter count does not depend on depth.
"""
from __future__ import annotations

import torch
from torch import nn

from psx.data.spec import TOKENS, DataSpec
from psx.errors import PsxError
from psx.models.attention import TransformerBlock
from psx.models.families.lm import LSTMLMConfig
from psx.models.families.transformer import TransformerConfig
from psx.models.task_modules import add_task_modules


def _check_tokens(name: str, spec: DataSpec) -> None:
    if spec.kind != TOKENS:
        raise PsxError(f"model {name} is a language model; {spec.name} holds {spec.kind}, not a token stream (use dataset=ptb)")


def _tie(model: nn.Module, cfg: LSTMLMConfig | TransformerConfig, tied: bool, embedding_size: int, out_features: int) -> int:
    """Set up tying; returns the width the decoder reads."""
    if not tied or embedding_size == out_features:
        return out_features
    if not cfg.tie_projection:
        raise PsxError(
            f"model {cfg.name}: tying needs model.embedding_size ({embedding_size}) == model.hidden_size "
            f"({out_features}); set them equal or add model.tie_projection=true"
        )
    model.projection = nn.Linear(out_features, embedding_size, bias=False)
    return embedding_size


def _embedding(rows: int, size: int) -> nn.Embedding:
    """nn.Embedding, built without its normal_ initialisation on the meta device (`psx inspect`, the checks
    before a run): meta tensors hold no values, and torch runs normal_ there through torch._refs, whose
    first use imports torch._dynamo (about 1.5 s). On other devices exactly nn.Embedding: the same draws."""
    if torch.get_default_device().type == "meta":
        return nn.Embedding.from_pretrained(torch.empty(rows, size), freeze=False)
    return nn.Embedding(rows, size)


def _normal_(tensor: torch.Tensor, std: float) -> None:
    if not tensor.is_meta:  # nothing to draw on the meta device (see _embedding)
        nn.init.normal_(tensor, std=std)


class LSTMLanguageModel(nn.Module):
    carries_state = True  # hidden state runs on from one bptt window to the next

    def __init__(self, cfg: LSTMLMConfig, spec: DataSpec):
        super().__init__()
        _check_tokens(cfg.name, spec)
        self.tied = cfg.arm == "tied"
        self.bptt = spec.seq_len
        self.projection = None
        embedding_size = cfg.embedding_size or cfg.hidden_size
        self.encoder = _embedding(spec.vocab_size, embedding_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(embedding_size, cfg.hidden_size, cfg.layers, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.decoder = nn.Linear(_tie(self, cfg, self.tied, embedding_size, cfg.hidden_size), spec.vocab_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if self.tied:
            self.decoder.weight = self.encoder.weight  # one Parameter, gradients from both uses
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens: torch.Tensor, state=None):  # tokens (T, B) -> logits (T, B, V)
        out, state = self.rnn(self.drop(self.encoder(tokens)), state)
        out = self.drop(out)
        if self.projection is not None:
            out = self.projection(out)
        return self.decoder(out), state

    def parameter_reuse(self) -> dict[str, float]:
        return {"encoder.weight": 2} if self.tied else {}

    def parameter_kinds(self) -> dict[str, str]:
        # The LSTM is reused at every step of a window in both arms, like rnn_shared's cell, but this
        # family compares tying: counting the steps would make the untied reference arm "shared" too.
        return {f"rnn.{name}": f"x{self.bptt}*" for name, _ in self.rnn.named_parameters()}

    @property
    def inspection_note(self) -> str:
        return (f"x{self.bptt}*: one LSTM runs at each of a window's {self.bptt} steps in both arms: not in the "
                "ratio, which counts the tying (a cell per step: model=rnn_unshared)")


class TransformerLanguageModel(nn.Module):
    carries_state = False

    def __init__(self, cfg: TransformerConfig, spec: DataSpec):
        super().__init__()
        _check_tokens(cfg.name, spec)
        self.tied, self.share_layers, self.layers = cfg.tied, cfg.arm == "shared", cfg.layers
        self.projection = None
        embedding_size = cfg.embedding_size or cfg.hidden_size
        self.encoder = _embedding(spec.vocab_size, embedding_size)
        self.positions = _embedding(spec.seq_len, embedding_size)
        self.input_projection = (nn.Linear(embedding_size, cfg.hidden_size, bias=False)
                                 if embedding_size != cfg.hidden_size else None)
        self.drop = nn.Dropout(cfg.dropout)

        def block():
            # With kv_heads = heads, TransformerBlock is nn.TransformerEncoderLayer(norm_first=True) bit for bit.
            return TransformerBlock(cfg.hidden_size, cfg.heads, cfg.feedforward_size, cfg.dropout, kv_heads=cfg.kv_heads)

        if self.share_layers:
            self.block = block()  # the same weights at every depth
        else:
            self.blocks = nn.ModuleList(block() for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.decoder = nn.Linear(_tie(self, cfg, cfg.tied, embedding_size, cfg.hidden_size), spec.vocab_size)
        _normal_(self.encoder.weight, std=0.02)
        nn.init.zeros_(self.decoder.bias)
        if cfg.tied:
            self.decoder.weight = self.encoder.weight
        else:
            _normal_(self.decoder.weight, std=0.02)
        blocks = ["block"] if self.share_layers else [f"blocks.{i}" for i in range(cfg.layers)]
        add_task_modules(self, cfg.adapter, cfg.adapter_size, blocks, blocks,
                         torch.zeros(1, 1, dtype=torch.long), -1, ["decoder"] if cfg.adapter == "head" else [])

    def forward(self, tokens: torch.Tensor, state=None):  # (T, B) -> (T, B, V); no state between windows
        length = tokens.shape[0]
        x = self.encoder(tokens) + self.positions(torch.arange(length, device=tokens.device)).unsqueeze(1)
        x = self.drop(x)
        if self.input_projection is not None:
            x = self.input_projection(x)
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        for layer in (self.block,) * self.layers if self.share_layers else self.blocks:
            x = layer(x, src_mask=mask, is_causal=True)
        x = self.norm(x)
        if self.projection is not None:
            x = self.projection(x)
        return self.decoder(x), None

    def parameter_reuse(self) -> dict[str, float]:
        reuse = {"encoder.weight": 2} if self.tied else {}
        if self.share_layers:
            reuse.update({f"block.{name}": self.layers for name, _ in self.block.named_parameters()})
        return reuse

