"""psx's speed where a sharing study spends its time, as ratios against baselines measured in the
same run, on the same machine (medians of several repeats).

  trainer   psx's Trainer vs a hand-written raw PyTorch loop: same model, same in-memory tensors,
            batch size and optimizer; training throughput after a warm-up epoch (target >= 0.95).
            cnn_shared on MNIST (digits if MNIST is not in the data folder) and lm_untied (small) on
            a PTB prefix, when PTB is there.
  lc        LocallyConnected2d vs Conv2d forward+backward at the shapes of cnn_unshared on MNIST and
            CIFAR-10, batch 128, channels-last as the CNNs run (target <= 2x); the input layers as
            the model runs them, without a gradient for the images (scripts/bench_lc.py times
            every layer with one).
  soft      SoftSharedConv2d (W_p = W + D_p) vs LocallyConnected2d, forward+backward at cnn_unshared's
            shapes on MNIST, batch 128, channels-last (target <= 1.2x); its penalty applied as the
            offsets' weight decay (no pass of its own), and added to the loss (one more pass).
  hashed    HashedLinear / HashedConv2d at compressions 1/8 and 1/64 vs the dense layer of the virtual
            size, forward+backward: mlp's 784 -> 256 at batch 32, cnn_shared's 32 -> 64 conv at 14x14
            and batch 128 (target <= 3x).
  rnn       rnn_unshared vs rnn_shared (PyTorch's fused LSTM), seconds per training epoch on the
            same rows (target <= 1.5x); vs rnn_unshared's own formulation given one shared weight
            set, which separates the cost of not sharing from the fused kernel's advantage; and the
            alternative formulation measured: autograd over the plain step loop.
  startup   `psx --help` (target < 0.5 s), `psx train --cfg job` (< 3 s), and the seconds from process
            start to the end of the first training step of a digits run (< 2 s), with its breakdown,
            against a plain script that reads the digits, builds the same CNN and takes one step.
  sweep     the digits cnn_sharing_vs_datasize grid: Hydra's basic launcher vs joblib with 2 jobs
            (target >= 1.6x on 2 cores), and the ceiling set by how well one job already uses
            both cores through torch's threads.
  busy      `psx train` on digits beside two CPU-bound processes, all held to the same two CPUs:
            psx's default threads vs device.num_threads=1 beside the same load (target <= 2x; torch's
            own default threads were many times slower), and vs the same command on the two idle CPUs.
  options   psx's GPU options, each alone and all together, against psx without them in the same
            run (fp32, data on the host copied per batch through pinned memory, eager,
            deterministic): data resident on the device, cudnn.benchmark, bf16 and fp16 autocast,
            torch.compile. Training throughput of cnn_shared and cnn_unshared after a warm-up epoch
            (compile's warm-up epoch includes compiling). Runs on CUDA when there is a GPU
            (--device to choose); skipped otherwise, as is everything but bf16 and compile on CPU.
  stacked   several seeds of one config trained together as one stacked model (psx.stacked) vs the
            same seeds trained one at a time by psx's Trainer: seeds per second (build + train, 2
            epochs on 500 digits) for cnn_shared, cnn_unshared and mlp, on CPU, and on CUDA when there is
            a GPU (ratio > 1: stacking is faster).

Each baseline is written plainly below: the simplest correct raw-PyTorch (or plain-command) way to
do the same work.

    python scripts/bench.py [--only trainer lc soft hashed rnn startup sweep busy options stacked] [--device cuda] [--json bench.json] [--quick]

Set PSX_DATA_DIR to a folder holding MNIST/raw and PennTreebank (torchvision's layout). Other busy
processes on the machine distort every figure: run it on an idle machine. Host memory is kept for
reuse (device.reuse_host_memory, a psx run's default) for psx and the baselines alike.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
PSX = str(Path(sys.executable).parent / "psx")


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from psx.hydra_app import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def have(dataset: str) -> bool:
    from psx.data import describe, require  # noqa: F401
    from psx.errors import PsxError

    cfg = compose(f"dataset={dataset}", "dataset.download=false")
    try:
        require(cfg.dataset, cfg.paths.data_dir)
        return True
    except PsxError:
        return False


# --- trainer overhead -------------------------------------------------------------------------


def raw_classification_epoch(model, train, batch_size, optimizer, generator):
    """The baseline: the plainest correct loop over the same in-memory tensors."""
    model.train()
    order = torch.randperm(len(train), generator=generator)
    for start in range(0, len(train), batch_size):
        idx = order[start:start + batch_size]
        x, y = train.batch(idx)  # the stored tensors, normalised per batch as psx stores them
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def raw_lm_epoch(model, tokens, batch_size, bptt, optimizer, clip):
    model.train()
    streams = tokens.streams(batch_size)
    state = None
    for i in range(0, len(streams) - 1, bptt):
        x, y = streams[i:i + bptt], streams[i + 1:i + 1 + bptt]
        x = x[:len(y)]
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()


def trainer_overhead(name, overrides, epochs, repeats):
    from psx.data import build_data
    from psx.models import build_model
    from psx.tasks import task_for
    from psx.optim import make_optimizer
    from psx.trainer import Trainer

    cfg = compose(*overrides, f"trainer.epochs={epochs}", "trainer.progress=none", "trainer.checkpoint=false",
                  "trainer.scheduler=none")
    data = build_data(cfg.dataset, data_dir=cfg.paths.data_dir)
    torch.manual_seed(0)
    template = build_model(cfg.model, data.spec)
    task = task_for(data.spec, cfg.model)
    items = len(data.train)

    def psx_run():
        model = copy.deepcopy(template)
        result = Trainer(cfg.trainer, seed=0).fit(model, data, task)
        psx_rates.extend(row[f"time/{task.unit}_per_s"] for row in result.history[1:])  # after warm-up

    def raw_run():
        model = copy.deepcopy(template)
        optimizer = make_optimizer(cfg.trainer, model.parameters())
        generator = torch.Generator().manual_seed(0)
        for epoch in range(epochs):
            started = time.perf_counter()
            if task.unit == "tokens":
                raw_lm_epoch(model, data.train, cfg.trainer.batch_size, data.spec.seq_len, optimizer, cfg.trainer.grad_clip)
            else:
                raw_classification_epoch(model, data.train, cfg.trainer.batch_size, optimizer, generator)
            if epoch > 0:
                raw_rates.append(items / (time.perf_counter() - started))

    # Short runs in alternating order, so that the machine's drift falls on both alike.
    psx_rates, raw_rates = [], []
    for repeat in range(2 * repeats):
        for run in (psx_run, raw_run) if repeat % 2 == 0 else (raw_run, psx_run):
            run()
    psx_rate, raw_rate = statistics.median(psx_rates), statistics.median(raw_rates)
    return {"what": f"trainer {name} ({task.unit}/s)", "psx": psx_rate, "baseline": raw_rate,
            "ratio": psx_rate / raw_rate, "target": ">= 0.95"}


# --- unshared layers ----------------------------------------------------------------------------


def lc_vs_conv(repeats, quick):
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_lc import time_layers

    # (in, out, size, kernel, padding): cnn_unshared's convs on MNIST (28x28, then 14x14 after pooling)
    # and with the CIFAR-10 experiment's three layers (32, 16, 8).
    shapes = [(1, 32, 28, 3, 1), (32, 64, 14, 3, 1), (3, 32, 32, 3, 1), (32, 64, 16, 3, 1), (64, 128, 8, 3, 1)]
    rows = []
    for shape in shapes[:1] if quick else shapes:
        cin, cout, size, k, _ = shape
        input_layer = cin in (1, 3)  # reads the images: in the model its input needs no gradient
        times = time_layers(["conv2d", "psx_lc"], shape, "cpu", repeats, input_grad=not input_layer)
        conv, lc = times["conv2d"], times["psx_lc"]
        note = " input layer, no input grad" if input_layer else ""
        rows.append({"what": f"LC vs conv {cin}->{cout} {size}x{size} k{k}{note} (ms)", "psx": lc * 1e3,
                     "baseline": conv * 1e3, "ratio": lc / conv, "target": "<= 2"})
    return rows


def interleaved_medians(passes, repeats):
    """Median seconds of each pass (a forward+backward), the passes interleaved repeat by repeat so a
    slow moment of the machine falls on all of them alike; three warm-up calls each first."""
    for run in passes.values():
        for _ in range(3):
            run()
    times = {name: [] for name in passes}
    for _ in range(repeats):
        for name, run in passes.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def soft_vs_lc(repeats, quick):
    """SoftSharedConv2d (W + D_p) vs LocallyConnected2d, one training step each (forward, backward and
    a fused Adam step, as psx's trainer makes it) at cnn_unshared's MNIST shapes, batch 128,
    channels-last, as in the lc rows: the soft layer with its penalty as the offsets' weight decay in
    their own Adam parameter group (psx's path with sgd/adam and no grad clip: psx.penalty_decay), and
    with the penalty's own forward and backward added to the loss (the path with adamw or a clip)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_lc import BATCH, step, upstream_gradient

    from psx.models.locally_connected import LocallyConnected2d
    from psx.models.soft_shared import SoftSharedConv2d

    def adam(groups):
        return torch.optim.Adam(groups, lr=1e-6, fused=True)

    rows = []
    for cin, cout, size, k, padding in [(1, 32, 28, 3, 1), (32, 64, 14, 3, 1)][:1 if quick else 2]:
        input_layer = cin == 1  # reads the images: in the model its input needs no gradient
        x = torch.randn(BATCH, cin, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(not input_layer)
        lc = LocallyConnected2d(cin, cout, (size, size), k, 1, padding)
        soft = SoftSharedConv2d(cin, cout, (size, size), k, 1, padding)
        in_loss = SoftSharedConv2d(cin, cout, (size, size), k, 1, padding)
        grad = upstream_gradient(lc(x))
        offsets = {id(p) for p in soft.offset_parameters()}
        optimizers = {"lc": adam(lc.parameters()), "penalty": adam(in_loss.parameters()),
                      "soft": adam([{"params": [p for p in soft.parameters() if id(p) not in offsets]},
                                    {"params": soft.offset_parameters(), "weight_decay": soft.penalty_decay(0.1)}])}

        def penalty_in_loss():  # the penalty's own forward and backward pass over the offsets
            in_loss.zero_grad(set_to_none=True)
            torch.autograd.backward([in_loss(x), 0.1 * in_loss.penalty()], [grad, torch.ones(())])
            optimizers["penalty"].step()

        def train_step(kind, layer):
            def run():
                step(layer, x, grad, "cpu")
                optimizers[kind].step()
            return run

        times = interleaved_medians({"lc": train_step("lc", lc), "soft": train_step("soft", soft),
                                     "penalty": penalty_in_loss}, repeats)
        note = " input layer, no input grad" if input_layer else ""
        for kind, how in [("soft", "penalty as decay, psx's path"), ("penalty", "penalty in loss")]:
            rows.append({"what": f"soft ({how}) vs LC {cin}->{cout} {size}x{size}{note}, step with Adam (ms)",
                         "psx": times[kind] * 1e3, "baseline": times["lc"] * 1e3, "ratio": times[kind] / times["lc"],
                         "target": "<= 1.2"})
    return rows


def hashed_vs_dense(repeats, quick):
    """HashedLinear / HashedConv2d vs the dense layer of the virtual size, forward+backward: mlp's first
    layer on MNIST (784 -> 256) at psx's default batch of 32, and cnn_shared's second conv (32 -> 64 at
    14x14) at batch 128; compressions 1/8 and 1/64."""
    from psx.models.hashed import HashedConv2d, HashedLinear

    def one_pass(layer, x):
        def run():
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()
        return run

    linear_x = torch.randn(32, 784)
    conv_x = torch.randn(128, 32, 14, 14).contiguous(memory_format=torch.channels_last)
    cases = [("linear 784->256 batch 32", torch.nn.Linear(784, 256), lambda c: HashedLinear(784, 256, c), linear_x),
             ("conv 32->64 14x14 k3 batch 128", torch.nn.Conv2d(32, 64, 3, padding=1),
              lambda c: HashedConv2d(32, 64, 3, padding=1, compression=c), conv_x)]
    rows = []
    for what, dense, make_hashed, x in cases[:1] if quick else cases:
        for compression in (1 / 8, 1 / 64):
            hashed = make_hashed(compression)
            times = interleaved_medians({"dense": one_pass(dense, x), "hashed": one_pass(hashed, x)}, repeats)
            rows.append({"what": f"hashed 1/{round(1 / compression)} vs dense {what} (ms)", "psx": times["hashed"] * 1e3,
                         "baseline": times["dense"] * 1e3, "ratio": times["hashed"] / times["dense"], "target": "<= 3"})
    return rows


class ExpandSteps(torch.nn.Module):
    """A parametrization: one step's tensor, seen as the same tensor at every step."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def forward(self, one_step):
        return one_step.expand(self.steps, *one_step.shape[1:])


def share_steps(model):
    """rnn_unshared's layers with one weight set reused at every step: the same Python step loop as
    rnn_unshared, but shared weights (so the cost of not sharing is separated from the fused kernel's
    advantage)."""
    from torch.nn.utils import parametrize

    for layer in model.layers:
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            one_step = getattr(layer, name)[:1].detach().clone()
            delattr(layer, name)
            layer.register_parameter(name, torch.nn.Parameter(one_step))
            parametrize.register_parametrization(layer, name, ExpandSteps(layer.steps), unsafe=True)
    return model


def autograd_step_loop(model):
    """rnn_unshared with autograd over its Python step loop instead of the LSTM Function with a
    hand-written backward pass (the formulation psx used before; still used for rnn/gru cells)."""
    for layer in model.layers:
        layer.forward = layer.step_loop
    return model


def rnn_epoch_ratio(dataset, repeats, quick):
    from psx.data import build_data
    from psx.models import build_model
    from psx.tasks import task_for
    from psx.trainer import Trainer

    arms = {"rnn_shared": ("rnn_shared", None), "rnn_unshared": ("rnn_unshared", None),
            "same loop, shared weights": ("rnn_unshared", share_steps),
            "autograd step loop": ("rnn_unshared", autograd_step_loop)}
    configs = {arm: compose(f"model={name}", f"dataset={dataset}", "trainer.epochs=2", "trainer.progress=none",
                            "trainer.checkpoint=false", "trainer.batch_size=128",
                            *(["dataset.train_size=5000"] if dataset == "mnist" else []),
                            *(["dataset.train_size=300"] if quick else []))
               for arm, (name, _) in arms.items()}
    data = build_data(configs["rnn_shared"].dataset, data_dir=configs["rnn_shared"].paths.data_dir)  # the same rows for every arm
    times = {arm: [] for arm in arms}
    for _ in range(repeats):  # arms interleaved, so that the machine's drift falls on all alike
        for arm, (_, transform) in arms.items():
            cfg = configs[arm]
            torch.manual_seed(0)
            model = build_model(cfg.model, data.spec)
            model = transform(model) if transform else model
            result = Trainer(cfg.trainer, seed=0).fit(model, data, task_for(data.spec, cfg.model))
            times[arm].append(result.history[-1]["time/epoch_s"])
    seconds = {arm: statistics.median(t) for arm, t in times.items()}
    unshared = seconds["rnn_unshared"]
    return [
        {"what": f"rnn_unshared vs rnn_shared (fused nn.LSTM) on {dataset} (s/epoch)", "psx": unshared,
         "baseline": seconds["rnn_shared"], "ratio": unshared / seconds["rnn_shared"], "target": "<= 1.5"},
        {"what": "  rnn_unshared vs the same code with one weight set for all steps (s/epoch)", "psx": unshared,
         "baseline": seconds["same loop, shared weights"], "ratio": unshared / seconds["same loop, shared weights"],
         "target": "(cost of not sharing)"},
        {"what": "  alternative: autograd over the step loop vs rnn_shared (s/epoch)", "psx": seconds["autograd step loop"],
         "baseline": seconds["rnn_shared"], "ratio": seconds["autograd step loop"] / seconds["rnn_shared"],
         "target": "(not used for LSTM)"},
    ]


# --- start-up and sweeps -------------------------------------------------------------------------


def timed(args, cwd, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([PSX, *args], cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# The start-up baseline: the plainest script that reaches the same point (digits read, the same
# CNN built, one Adam step done), run as its own process; it prints the seconds from its start.
RAW_FIRST_STEP = """
import time
started = time.perf_counter()
import importlib.util, pathlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
csv = pathlib.Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets/data/digits.csv.gz"
table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
x = torch.from_numpy(table[:, :-1].reshape(-1, 1, 8, 8) / 16.0)
y = torch.from_numpy(table[:, -1].astype(np.int64))
model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 2 * 2, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss = F.cross_entropy(model(x[:32]), y[:32])
optimizer.zero_grad()
loss.backward()
optimizer.step()
print(time.perf_counter() - started)
"""


def raw_first_step(repeats):
    runs = [float(subprocess.run([sys.executable, "-c", RAW_FIRST_STEP], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeats)]
    return statistics.median(runs)


def startup(repeats):
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            {"what": "psx --help (s)", "psx": timed(["--help"], tmp, repeats), "target": "< 0.5"},
            {"what": "psx train --cfg job (s)", "psx": timed(["train", "--cfg", "job"], tmp, repeats), "target": "< 3"},
        ]
        breakdowns = []
        for i in range(repeats):
            subprocess.run([PSX, "train", "trainer.epochs=1", f"hydra.run.dir=run{i}"], cwd=tmp, capture_output=True, check=True)
            breakdowns.append(json.loads((Path(tmp) / f"run{i}" / "summary.json").read_text())["startup_s"])
        breakdown = {key: statistics.median(b[key] for b in breakdowns) for key in breakdowns[0]}
        detail = ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items() if k != "total")
        rows.append({"what": f"process start -> first step done, digits (s) [{detail}]", "psx": breakdown["total"],
                     "baseline": raw_first_step(repeats), "ratio": None, "target": "< 2"})
        rows[-1]["ratio"] = rows[-1]["psx"] / rows[-1]["baseline"]
    return rows


def sweep():
    """The experiment's grid as it is defined (20 epochs), under each launcher; and the ceiling for
    joblib(2) set by the jobs' training seconds in the two sweeps. The basic launcher's jobs already
    use both cores through torch's intra-op threads, so two single-threaded jobs side by side gain at
    most 2 x (training seconds with 2 threads) / (training seconds with 1 thread each), even if
    everything around the training (Hydra's job set-up, process start) cost nothing."""
    grid = ["-m", "experiment=cnn_sharing_vs_datasize"]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([PSX, "train", *grid, "hydra.sweep.dir=basic"], cwd=tmp, capture_output=True, check=True)
        basic = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([PSX, "train", *grid, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=joblib"],
                       cwd=tmp, capture_output=True, check=True)
        joblib = time.perf_counter() - started
        train = {name: sum(json.loads(p.read_text())["train_seconds"] for p in (Path(tmp) / name).glob("*/summary.json"))
                 for name in ("basic", "joblib")}
    return [
        {"what": "digits grid, 30 runs: joblib(2) vs basic launcher (s)", "psx": joblib,
         "baseline": basic, "ratio": basic / joblib, "target": ">= 1.6 (speed-up)"},
        {"what": f"  ceiling: 2 x training s, 2 threads / 1 thread per job ({train['basic']:.1f} / {train['joblib']:.1f})",
         "psx": 2 * train["basic"] / train["joblib"], "target": "(limit of the above)"},
    ]


BUSY_LOOP = "while True: pass"


def two_cpus():
    """Two of the CPUs this process may use: the busy benchmark holds psx and the load to them."""
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[:2]) if len(cpus) >= 2 else None


def timed_on(cpus, args, cwd):
    started = time.perf_counter()
    subprocess.run([PSX, *args], cwd=cwd, capture_output=True, check=True,
                   preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    return time.perf_counter() - started


def busy_machine(quick):
    """Whole `psx train` runs (default: cnn_shared on digits) on two CPUs, idle and beside two
    CPU-bound processes on the same two CPUs. Torch's default threads made the busy run many
    times slower than device.num_threads=1; psx's default must stay within 2x of it."""
    cpus = two_cpus()
    if cpus is None:
        return [], ["# busy: needs two CPUs, skipped"]
    args = ["train", *(["trainer.epochs=2"] if quick else [])]
    with tempfile.TemporaryDirectory() as tmp:
        idle = timed_on(cpus, args, tmp)
        load = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], preexec_fn=lambda: os.sched_setaffinity(0, cpus))
                for _ in range(2)]
        try:
            time.sleep(0.5)
            busy_default = timed_on(cpus, args, tmp)
            busy_one = timed_on(cpus, [*args, "device.num_threads=1"], tmp)
        finally:
            for process in load:
                process.kill()
                process.wait()
        threads = sorted(json.loads(p.read_text()).get("torch_threads") for p in Path(tmp).glob("outputs/*/*/summary.json"))
    return [
        {"what": "psx train on 2 busy CPUs: default threads vs device.num_threads=1 (s)", "psx": busy_default,
         "baseline": busy_one, "ratio": busy_default / busy_one, "target": "<= 2"},
        {"what": f"  the same run on the 2 CPUs idle (s) [torch threads chosen: {threads}]", "psx": busy_default,
         "baseline": idle, "ratio": busy_default / idle, "target": "<= 2"},
    ], []


# --- GPU options ---------------------------------------------------------------------------------

# Each option as overrides on top of OPTIONS_BASELINE; the device types it means anything on.
COMPILE = "trainer.compile=true"
OPTIONS_BASELINE = ["device.data=host", "trainer.precision=fp32", "trainer.compile=false", "trainer.deterministic=true"]
OPTIONS = {
    "data resident on the device": (["device.data=device"], ("cuda",)),
    "cudnn.benchmark (deterministic=false)": (["trainer.deterministic=false"], ("cuda",)),
    "bf16 autocast": (["trainer.precision=bf16"], ("cuda", "cpu")),
    "fp16 autocast + gradient scaling": (["trainer.precision=fp16"], ("cuda",)),
    "torch.compile": ([COMPILE], ("cuda", "cpu")),
    "all of the above but fp16": (["device.data=device", "trainer.deterministic=false", "trainer.precision=bf16", COMPILE],
                                  ("cuda",)),
}


def gpu_options(device, dataset, repeats, quick):
    from psx.data import build_data
    from psx.device import configure_backends, place_data
    from psx.models import build_model
    from psx.tasks import task_for
    from psx.trainer import Trainer

    arms = {"baseline": []} | {name: extra for name, (extra, kinds) in OPTIONS.items() if device in kinds}
    if quick:
        arms = {name: extra for name, extra in arms.items() if COMPILE not in extra}
    size = ["dataset.train_size=300"] if quick else ["dataset.train_size=10000"] if dataset == "mnist" else []
    rows = []
    for model_name in ("cnn_shared", "cnn_unshared"):
        configs = {arm: compose(f"model={model_name}", f"dataset={dataset}", f"device={device}", *size, "trainer.epochs=3",
                                "trainer.batch_size=128", "trainer.progress=none", "trainer.checkpoint=false",
                                "trainer.scheduler=none", *OPTIONS_BASELINE, *extra)
                   for arm, extra in arms.items()}
        data = build_data(configs["baseline"].dataset, data_dir=configs["baseline"].paths.data_dir)
        rates, warm_up = {arm: [] for arm in arms}, {arm: [] for arm in arms}
        for _ in range(repeats):  # arms interleaved, so that the machine's drift falls on all alike
            for arm, cfg in configs.items():
                configure_backends(cfg.trainer.deterministic)
                torch.manual_seed(0)
                placed = place_data(data, torch.device(device), cfg.device.data)
                model = build_model(cfg.model, data.spec).to(device)
                history = Trainer(cfg.trainer, seed=0).fit(model, placed, task_for(data.spec, cfg.model)).history
                rates[arm] += [row["time/samples_per_s"] for row in history[1:]]
                warm_up[arm].append(history[0]["time/epoch_s"])
        baseline = statistics.median(rates["baseline"])
        rows.append({"what": f"{model_name}/{dataset} on {device}, psx without the options (samples/s)",
                     "psx": baseline, "target": ""})
        for arm in arms:
            if arm != "baseline":
                rate = statistics.median(rates[arm])
                what = f"  {arm}: speed-up (samples/s)"
                if COMPILE in arms[arm]:  # its first epoch includes compiling
                    what += f" [first epoch {statistics.median(warm_up[arm]):.1f} s]"
                rows.append({"what": what, "psx": rate, "baseline": baseline, "ratio": rate / baseline, "target": "(measured)"})
    return rows


# --- stacked seeds -------------------------------------------------------------------------------


def stacked_seeds(devices, seeds, repeats, quick):
    """Seeds per second, K seeds of one config stacked (psx.stacked) vs trained one at a time by psx's
    Trainer: each side builds its K models and trains them; data built and placed once, outside the clock."""
    from psx.data import build_data
    from psx.device import place_data
    from psx.stacked import build_seed_model, fit_stacked
    from psx.tasks import task_for
    from psx.trainer import Trainer

    rows = []
    for device in devices:
        for model_name in ("cnn_shared", "cnn_unshared", "mlp"):
            cfg = compose(f"model={model_name}", "dataset=digits", f"device={device}", "trainer.epochs=2",
                          "trainer.progress=none", "trainer.checkpoint=false", f"dataset.train_size={100 if quick else 500}")
            data = place_data(build_data(cfg.dataset, data_dir=cfg.paths.data_dir), torch.device(device), cfg.device.data)
            task = task_for(data.spec, cfg.model)

            def one_by_one():
                for seed in range(seeds):
                    Trainer(cfg.trainer, seed).fit(build_seed_model(cfg.model, data.spec, seed, torch.device(device)), data, task)

            def stacked():
                fit_stacked(cfg.model, cfg.trainer, data, task, list(range(seeds)), device)

            times = {one_by_one: [], stacked: []}
            fit_stacked(cfg.model, cfg.trainer, data, task, [0, 1], device)  # warm-up: the kernels' first calls
            Trainer(cfg.trainer, 0).fit(build_seed_model(cfg.model, data.spec, 0, torch.device(device)), data, task)
            for repeat in range(repeats):  # alternating order, so that the machine's drift falls on both alike
                for run in (one_by_one, stacked) if repeat % 2 == 0 else (stacked, one_by_one):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    started = time.perf_counter()
                    run()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times[run].append(time.perf_counter() - started)
            alone_rate, stacked_rate = (seeds / statistics.median(times[run]) for run in (one_by_one, stacked))
            rows.append({"what": f"stacked seeds: {seeds} x {model_name}/digits on {device} (seeds/s)", "psx": stacked_rate,
                         "baseline": alone_rate, "ratio": stacked_rate / alone_rate, "target": "(measured)"})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["trainer", "lc", "soft", "hashed", "rnn", "startup", "sweep", "busy", "options", "stacked"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else None,
                        help="device for the options section (default: cuda when there is a GPU, else skipped)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    from psx.device import reuse_host_memory

    reuse_host_memory()  # as a psx run does by default: psx and every baseline in this process alike

    rows, notes = [], []
    if "trainer" in args.only:
        mnist = not args.quick and have("mnist")
        rows.append(trainer_overhead("cnn_shared/" + ("mnist 10k" if mnist else "digits"),
                                     ["model=cnn_shared", f"dataset={'mnist' if mnist else 'digits'}",
                                      *(["dataset.train_size=10000"] if mnist else [])], 2, repeats))
        if not args.quick and have("ptb"):
            rows.append(trainer_overhead("lm_untied small/ptb 100k tokens",
                                         ["model=lm_untied", "dataset=ptb", "dataset.train_size=100000", "trainer.optimizer=sgd",
                                          "trainer.lr=20", "trainer.momentum=0", "trainer.grad_clip=0.25", "trainer.batch_size=20",
                                          "trainer.eval_batch_size=10"], 2, repeats))
    if "lc" in args.only:
        rows += lc_vs_conv(2 if args.quick else 30, args.quick)
    if "soft" in args.only:
        rows += soft_vs_lc(2 if args.quick else 30, args.quick)
    if "hashed" in args.only:
        rows += hashed_vs_dense(2 if args.quick else 30, args.quick)
    if "rnn" in args.only:
        rows += rnn_epoch_ratio("digits" if args.quick or not have("mnist") else "mnist", repeats, args.quick)
    if "startup" in args.only:
        rows += startup(1 if args.quick else 5)
    if "sweep" in args.only and not args.quick:
        rows += sweep()
    if "busy" in args.only:
        busy_rows, busy_notes = busy_machine(args.quick)
        rows += busy_rows
        notes += busy_notes
    if "options" in args.only:
        if args.device is None:
            notes.append("# options: no GPU here, skipped (--device cpu measures the options CPU has: bf16, compile)")
        else:
            rows += gpu_options(args.device, "digits" if args.quick or not have("mnist") else "mnist", repeats, args.quick)

    if "stacked" in args.only:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        rows += stacked_seeds(devices, 2 if args.quick else 8, repeats, args.quick)

    print(f"# psx benchmarks: {platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"{'measurement':<78}{'psx':>12}{'baseline':>12}{'ratio':>8}  target")
    for row in rows:
        baseline = f"{row['baseline']:>12.2f}" if "baseline" in row else f"{'':>12}"
        ratio = f"{row['ratio']:>8.2f}" if "ratio" in row else f"{'':>8}"
        print(f"{row['what']:<78}{row['psx']:>12.2f}{baseline}{ratio}  {row['target']}")
    for note in notes:
        print(note)
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows, "notes": notes}, indent=2))


if __name__ == "__main__":
    main()
