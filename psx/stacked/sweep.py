"""Which jobs of a sweep can train as one stack: those whose configs differ only in `seed`.

For the launcher-side hook (see the psx.stacked package docstring): Hydra gives a launcher every
job's override list; jobs whose lists are equal once `seed=` is left out form one group, in sweep
order. The composed configs are checked as well (same_but_seed), since an experiment or a default
may set the seed in ways an override list does not show.
"""
from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig, OmegaConf

SEED_KEYS = ("seed", "+seed", "++seed")


def _without_seed(overrides: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0] not in SEED_KEYS))


def seed_groups(job_overrides: Sequence[Sequence[str]]) -> list[list[int]]:
    """Indices of the jobs, grouped by their overrides without `seed=`; each group in sweep order,
    groups in the order of their first job. A group of one trains as a single run."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, overrides in enumerate(job_overrides):
        groups.setdefault(_without_seed(overrides), []).append(index)
    return list(groups.values())


def same_but_seed(cfgs: Sequence[DictConfig]) -> bool:
    """Whether these composed job configs are the same run but for `seed` (the hydra node, which
    holds each job's own folder and number, left out), with no seed twice."""
    def body(cfg):
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra", None)
        plain.pop("seed", None)
        return plain

    first = body(cfgs[0])
    seeds = [cfg.seed for cfg in cfgs]
    return len(set(seeds)) == len(seeds) and all(body(cfg) == first for cfg in cfgs[1:])
