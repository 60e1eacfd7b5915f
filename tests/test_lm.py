"""Language models: tying is one Parameter, counts are exact, perplexity is the classic one."""
import math

import pytest
import torch
import torch.nn.functional as F

from psx.data.spec import TOKENS, DataSpec
from psx.data.tensors import Tokens
from psx.errors import PsxError
from psx.models import build_model, param_counts
from psx.models.families.cnn import CNNConfig
from psx.models.families.lm import LSTMLMConfig
from psx.models.families.transformer import TransformerConfig
from psx.tasks import LanguageModeling

VOCAB, BPTT = 500, 12
TOKENS_SPEC = DataSpec(name="ptb", input_shape=(), num_classes=VOCAB, kind=TOKENS, vocab_size=VOCAB, seq_len=BPTT)


def lm(config):
    torch.manual_seed(0)
    return build_model(config, TOKENS_SPEC)


def lstm(arm, **arguments):
    return lm(LSTMLMConfig(name=f"lm_{arm}", arm=arm, **arguments))


def transformer(arm, **arguments):
    return lm(TransformerConfig(name="lm_transformer", arm=arm, **arguments))


def test_tied_decoder_weight_is_the_embedding_parameter_and_gets_gradient_from_both_uses():
    model = lstm("tied")
    assert model.decoder.weight is model.encoder.weight
    tokens = torch.randint(0, VOCAB, (BPTT, 3))
    logits, _ = model(tokens)
    logits.sum().backward()
    both = model.encoder.weight.grad.clone()
    # The decoder's share alone: the gradient through the output layer, input embedding detached.
    model.zero_grad()
    with torch.no_grad():
        hidden = model.drop(model.rnn(model.drop(model.encoder(tokens)))[0])
    (hidden @ model.decoder.weight.t()).sum().backward()
    decoder_only = model.encoder.weight.grad.clone()
    assert decoder_only.abs().sum() > 0
    input_rows = torch.unique(tokens)
    assert not torch.allclose(both[input_rows], decoder_only[input_rows])  # the embedding use adds to them


@pytest.mark.parametrize("hidden", [200, 650])
def test_tied_count_is_untied_minus_vocab_times_dim(hidden):
    tied = param_counts(lstm("tied", hidden_size=hidden))
    untied = param_counts(lstm("untied", hidden_size=hidden))
    # Bias rule: both keep the decoder bias; tying removes exactly the decoder weight.
    assert untied["params/unique"] - tied["params/unique"] == VOCAB * hidden
    lstm_weights = 2 * 4 * hidden * (hidden + hidden + 2)
    assert untied["params/unique"] == VOCAB * hidden + lstm_weights + VOCAB * hidden + VOCAB
    assert tied["params/unshared_equiv"] == untied["params/unique"]


def test_presets_match_the_classic_setups():
    """model.size picks the preset in the composed config (conf/model/lm_tied.yaml)."""
    from hydra import compose, initialize_config_dir

    from psx.hydra_app import config_dir

    for size, (hidden, dropout) in {"small": (200, 0.2), "medium": (650, 0.5), "large": (1500, 0.65)}.items():
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=["model=lm_untied", f"model.size={size}"]).model
        assert (cfg.layers, cfg.hidden_size, cfg.embedding_size, cfg.dropout) == (2, hidden, hidden, dropout)


def test_tying_unequal_sizes_is_an_error_unless_projected():
    with pytest.raises(PsxError, match="tie_projection"):
        lstm("tied", embedding_size=100)
    model = lstm("tied", embedding_size=100, tie_projection=True)
    assert model.decoder.weight is model.encoder.weight and model.projection.weight.shape == (100, 200)
    assert model(torch.randint(0, VOCAB, (BPTT, 2)))[0].shape == (BPTT, 2, VOCAB)


@pytest.mark.parametrize("layers", [1, 3, 6])
def test_shared_transformer_has_one_blocks_parameters_whatever_the_depth(layers):
    shared = param_counts(transformer("shared", layers=layers))
    one_layer = param_counts(transformer("unshared", layers=1))
    unshared = param_counts(transformer("unshared", layers=layers))
    assert shared["params/unique"] == one_layer["params/unique"]
    assert shared["params/unshared_equiv"] == unshared["params/unshared_equiv"] == unshared["params/unique"] + VOCAB * 256
    model = transformer("shared", layers=layers)
    assert model(torch.randint(0, VOCAB, (BPTT, 2)))[0].shape == (BPTT, 2, VOCAB)


def test_transformer_is_causal():
    model = transformer("unshared", dropout=0.0).eval()
    tokens = torch.randint(0, VOCAB, (BPTT, 1))
    changed = tokens.clone()
    changed[-1] = (changed[-1] + 1) % VOCAB
    torch.testing.assert_close(model(tokens)[0][:-1], model(changed)[0][:-1])


def test_perplexity_is_over_every_token_with_state_carried():
    model = lstm("untied").eval()
    ids = torch.randint(0, VOCAB, (1003,))
    metrics = LanguageModeling(BPTT).evaluate(model, Tokens(ids), batch_size=4)
    # Independent computation: 4 streams of 250 tokens, the whole stream in one pass.
    streams = ids[:1000].view(4, 250).t()
    with torch.no_grad():
        logits, _ = model(streams[:-1])
    expected = F.cross_entropy(logits.flatten(0, 1), streams[1:].flatten()).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_language_models_refuse_images_and_image_models_refuse_tokens():
    images = DataSpec(name="digits", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(PsxError, match="language model"):
        build_model(LSTMLMConfig(), images)
    with pytest.raises(PsxError, match="token stream"):
        build_model(CNNConfig(), TOKENS_SPEC)


def test_inspection_names_the_window_and_shows_the_lstm_reuse_the_ratio_leaves_out(capsys):
    from psx.data.spec import input_text
    from psx.inspect import print_inspection
    from psx.run_summary import params_text

    config = LSTMLMConfig(name="lm_tied", arm="tied", hidden_size=16, layers=1)
    model = lm(config)
    print_inspection(model, f"lm_tied on ptb {input_text(TOKENS_SPEC)}", config)
    out = capsys.readouterr().out
    assert f"lm_tied on ptb (windows of {BPTT} tokens, vocabulary {VOCAB:,})" in out
    rows = [line for line in out.splitlines() if "rnn." in line and line.startswith("│")]
    assert len(rows) == 4 and all(f"x{BPTT}*" in row for row in rows)
    assert f"x{BPTT}*: one LSTM runs at each of a window's {BPTT} steps in both arms: not in the" in out
    counts = param_counts(model)
    assert counts["params/unshared_equiv"] == counts["params/unique"] + VOCAB * 16  # the tying alone
    summary = {**counts, "sharing/ratio": counts["params/unshared_equiv"] / counts["params/unique"]}
    assert params_text(summary) == (f"params/unique {counts['params/unique']:,}, params/unshared_equiv "
                                    f"{counts['params/unshared_equiv']:,} (sharing ratio {summary['sharing/ratio']:.2f}x)")


def test_lm_pair_end_to_end_on_real_ptb(psx, data_root):
    import json

    result = psx("train", "-m", "model=lm_tied,lm_untied", "dataset=ptb", "dataset.train_size=20000", "trainer.epochs=1",
                 "trainer.batch_size=20", "trainer.eval_batch_size=10", extra_env={"PSX_DATA_DIR": str(data_root)})
    assert result.returncode == 0, result.stderr
    runs = {}
    for path in (psx.cwd / "outputs").rglob("summary.json"):
        summary = json.loads(path.read_text())
        runs[summary["model"]] = summary
        assert summary["selection_metric"] == "val/ppl" and summary["train_examples"] == 20000
        assert 1 < summary["metrics"]["test/ppl"] < 10_000
        header = (path.parent / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"train/ppl", "val/ppl", "time/tokens_per_s"} <= set(header)
    assert runs["lm_untied"]["params/unique"] - runs["lm_tied"]["params/unique"] == 10_000 * 200


def test_ptb_val_tokens_shortens_validation_only(psx, data_root):
    """dataset.val_tokens validates on a prefix of the validation stream and records its size; training and
    the test evaluation are those of the run that validates on everything."""
    import json

    result = psx("train", "-m", "model=lm_tied", "model.hidden_size=16", "model.layers=1", "dataset=ptb",
                 "dataset.train_size=2000", "dataset.val_tokens=null,700", "trainer.epochs=1", "trainer.batch_size=20",
                 "trainer.eval_batch_size=350", "device.num_threads=1",
                 extra_env={"PSX_DATA_DIR": str(data_root)})
    assert result.returncode == 0, result.stderr
    runs = {}
    for path in (psx.cwd / "outputs").rglob("summary.json"):
        summary = json.loads(path.read_text())
        runs[summary["val_examples"]] = summary["metrics"]
    assert sorted(runs) == [700, 73_760]
    whole, part = runs[73_760], runs[700]
    assert part["train/loss"] == whole["train/loss"] and part["test/ppl"] == whole["test/ppl"]
    assert part["val/ppl"] != whole["val/ppl"]


@pytest.mark.parametrize("build", [lambda: lstm("tied"), lambda: transformer("unshared")], ids=["lstm", "transformer"])
def test_language_models_on_the_meta_device_have_the_tensors_they_have_on_the_cpu(build):
    on_cpu = build()
    with torch.device("meta"):
        on_meta = build()
    assert [(n, p.shape, p.requires_grad) for n, p in on_meta.named_parameters(remove_duplicate=False)] == \
        [(n, p.shape, p.requires_grad) for n, p in on_cpu.named_parameters(remove_duplicate=False)]
    assert all(p.is_meta for p in on_meta.parameters()) and param_counts(on_meta) == param_counts(on_cpu)


def test_building_a_language_model_on_the_meta_device_does_not_import_dynamo():
    """torch runs normal_ on meta tensors through torch._refs, whose first use imports torch._dynamo (seconds):
    `psx inspect` of a language model would spend most of its time there."""
    import subprocess
    import sys

    code = ("import sys, torch\nfrom psx.data.spec import TOKENS, DataSpec\nfrom psx.models import build_model\n"
            "from psx.models.families.lm import LSTMLMConfig\nfrom psx.models.families.transformer import TransformerConfig\n"
            "spec = DataSpec(name='ptb', input_shape=(), num_classes=50, kind=TOKENS, vocab_size=50, seq_len=6)\n"
            "with torch.device('meta'):\n"
            "    build_model(LSTMLMConfig(name='lm_tied', arm='tied', hidden_size=8, layers=1), spec)\n"
            "    build_model(TransformerConfig(name='lm_transformer', arm='unshared'), spec)\n"
            "print('torch._dynamo' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
