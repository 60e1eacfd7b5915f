"""Which Flower engine a federated run uses: the simulation engine psx starts itself (the
default), or the deployment engine, whose SuperLink hands psx's ServerApp a grid of real
SuperNodes (psx.federated.deployment sets it for the run it starts)."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

_DEPLOYMENT_GRID: ContextVar[Any] = ContextVar("psx_flower_deployment_grid", default=None)


@contextmanager
def deployed(grid: Any) -> Iterator[None]:
    """Federated runs started inside this block train on `grid` instead of a simulation."""
    token = _DEPLOYMENT_GRID.set(grid)
    try:
        yield
    finally:
        _DEPLOYMENT_GRID.reset(token)


def deployment_grid() -> Any:
    """The deployment engine's grid for the run being started, or None: simulate."""
    return _DEPLOYMENT_GRID.get()
