"""psx's hand-written layers, left out of torch.compile's tracing."""
from __future__ import annotations

import threading

import torch
from torch import nn

_KEPT_OUT_OF_COMPILE: set = set()  # the wrapped forwards compile_model has installed


def run_eagerly_under_compile(forward):
    """Mark a layer's forward to run as it is under `trainer.compile=true`: compile_model puts a
    graph break around it and compiles the rest of the model.

    LocallyConnected2d and the per-step recurrent layer are already written for speed, as loops
    over blocks or time steps and autograd Functions. Traced, those loops unroll into graphs that
    took minutes to compile on CPU, again for each new batch size, and the result ran slower than
    with the graph break (figures: README, Speed)."""
    forward.run_eagerly_under_compile = True
    return forward


def compile_model(model: nn.Module, **compile_options) -> nn.Module:
    """torch.compile(model, **compile_options), with the forward of every layer type marked by
    run_eagerly_under_compile wrapped in torch.compiler.disable first (once per type). The wrapping
    is done here, when a run compiles, and not by the decorator, because torch.compiler.disable
    imports torch._dynamo, which is slow to import (README, Speed: start-up)."""
    for layer_type in {type(module) for module in model.modules()}:
        forward = layer_type.forward
        if getattr(forward, "run_eagerly_under_compile", False) and forward not in _KEPT_OUT_OF_COMPILE:
            layer_type.forward = torch.compiler.disable(forward)
            _KEPT_OUT_OF_COMPILE.add(layer_type.forward)
    _thread_lock_for_progress_bars()
    return torch.compile(model, **compile_options)


def _thread_lock_for_progress_bars() -> None:
    """torch.compile reports progress through tqdm, whose first bar makes a lock shared across
    processes (a semaphore). psx kills its joblib workers once a sweep is done, and the semaphore
    of a worker that had compiled was then reported at exit as leaked. psx shows no tqdm bars from
    several processes, so a thread lock is all they need."""
    try:
        from tqdm import tqdm
    except ImportError:  # torch does without tqdm
        return
    tqdm.set_lock(threading.RLock())
