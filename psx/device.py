"""Turn the `device` config into a torch.device, failing early and clearly."""
from __future__ import annotations

import ctypes
import logging
import os
import sys

import torch
from omegaconf import DictConfig

from psx.errors import PsxError
from psx.threads import ThreadChoice, choose_threads

log = logging.getLogger("psx")

# The last run's thread choice in this process, for its summary.json.
_THREADS: ThreadChoice | None = None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_device(cfg: DictConfig, job_num: int | None = None, parallel_jobs: int = 1) -> torch.device:
    """`parallel_jobs` > 1 when a launcher runs that many jobs at once on this machine: each job
    then gets its share of the CPUs as torch threads (unless device.num_threads says otherwise),
    and on CUDA the jobs are spread over the visible GPUs by job number. Without device.num_threads
    the threads come from the CPUs the process was given (psx.threads)."""
    global _THREADS
    kind = cfg.type
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    elif kind == "cuda" and not torch.cuda.is_available():
        raise PsxError("device=cuda but CUDA is not available on this machine (use device=cpu or device=auto)")
    elif kind == "mps" and not _mps_available():
        raise PsxError("device=mps but Apple MPS is not available on this machine (use device=cpu or device=auto)")
    if cfg.num_threads is not None:
        _THREADS = ThreadChoice(cfg.num_threads, "device.num_threads")
    else:
        _THREADS = choose_threads(parallel_jobs)
    torch.set_num_threads(_THREADS.threads)
    how = "" if cfg.num_threads is not None else "; device.num_threads sets it"
    log.info("torch threads: %d (%s%s)", _THREADS.threads, _THREADS.reason, how)
    if kind == "cuda" and job_num is not None and torch.cuda.device_count() > 1:
        return torch.device("cuda", job_num % torch.cuda.device_count())
    return torch.device(kind)


def thread_reason() -> str | None:
    """Why the last run in this process got its number of torch threads."""
    return _THREADS.reason if _THREADS is not None else None


def place_data(data, device: torch.device, placement: str):
    """Data tensors on the device when they fit (auto: under half the free GPU memory), else on
    the host, from where each batch is copied through pinned memory."""
    if device.type == "cpu" or placement == "host":
        return data
    if placement == "auto" and device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if data.nbytes() > free // 2:
            return data
    return data.to(device)


def reuse_host_memory() -> bool:
    """Keep freed host memory in the process so that large tensors are reused, not faulted in afresh.

    glibc's malloc returns every block above its mmap threshold (at most 32 MB) to the OS on free,
    so a tensor of that size allocated at every step (activations at the evaluation batch size,
    unfolded patches) is page-faulted in anew each time: evaluating cnn_shared on 5,000 MNIST
    images took 1.5 s that way and 0.64 s with this. Serving every block from the heap and never
    trimming it is what jemalloc/tcmalloc or PyTorch's CUDA caching allocator do; the cost is that
    the process keeps its peak memory until it exits. Returns False where libc is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def configure_backends(deterministic: bool) -> None:
    """Deterministic algorithms when asked (reproducible on GPU, slower); otherwise let cuDNN
    autotune its convolution algorithms. CPU runs are bit-reproducible either way."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise PsxError("trainer.precision=fp16 needs CUDA; use trainer.precision=bf16 on this device")
