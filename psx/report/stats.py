"""Intervals, tests and sample sizes for a difference between two arms (numpy + scipy only).

- paired: arms run with the same seed on the same training subset give one difference per pair;
  the 95% interval is the t interval on those differences, mean ± t(0.975, n-1) · sd / sqrt(n).
- unpaired (no common seeds): Welch's t interval on the difference of the two means.
- bootstrap: the percentile interval of the same mean difference over resamples (pairs resampled
  together; unpaired arms resampled separately), with a fixed seed so the report is reproducible.
- Holm: the step-down correction that makes the verdicts hold together across the table.
- seeds: the smallest n for which a t-test at level alpha has 80% power to detect a given gap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise, over the rows of one report
POWER = 0.80
BOOTSTRAP_SAMPLES = 10_000
MAX_SEEDS = 1000


@dataclass
class Difference:
    """arm − reference on one metric, with how it was estimated."""

    method: str  # "paired" or "welch"
    n: int  # pairs (paired) or the smaller arm's runs (welch)
    mean: float
    low: float = math.nan  # t (or Welch) 95% interval
    high: float = math.nan
    boot_low: float = math.nan
    boot_high: float = math.nan
    p: float = math.nan  # two-sided, for "no difference"
    spread: float = math.nan  # sd of the differences (paired) or the pooled per-run sd (welch)


def paired(arm: np.ndarray, reference: np.ndarray) -> Difference:
    diffs = np.asarray(arm, float) - np.asarray(reference, float)
    n, mean = len(diffs), float(diffs.mean())
    result = Difference("paired", n, mean)
    if n < 2:
        return result
    sd = float(diffs.std(ddof=1))
    result.spread = sd
    result.boot_low, result.boot_high = _bootstrap(lambda idx: diffs[idx].mean(axis=1), n)
    if sd == 0.0:
        result.low = result.high = mean
        result.p = 1.0 if mean == 0.0 else 0.0
        return result
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * se
    result.low, result.high = float(mean - half), float(mean + half)
    result.p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return result


def welch(arm: np.ndarray, reference: np.ndarray) -> Difference:
    a, r = np.asarray(arm, float), np.asarray(reference, float)
    mean = float(a.mean() - r.mean())
    result = Difference("welch", min(len(a), len(r)), mean)
    if len(a) < 2 or len(r) < 2:
        return result
    va, vr = a.var(ddof=1) / len(a), r.var(ddof=1) / len(r)
    result.spread = math.sqrt((a.var(ddof=1) + r.var(ddof=1)) / 2)
    rng = np.random.default_rng(0)
    boot = (a[rng.integers(0, len(a), (BOOTSTRAP_SAMPLES, len(a)))].mean(axis=1)
            - r[rng.integers(0, len(r), (BOOTSTRAP_SAMPLES, len(r)))].mean(axis=1))
    result.boot_low, result.boot_high = (float(q) for q in np.quantile(boot, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    se = math.sqrt(va + vr)
    if se == 0.0:
        result.low = result.high = mean
        result.p = 1.0 if mean == 0.0 else 0.0
        return result
    df = (va + vr) ** 2 / (va ** 2 / (len(a) - 1) + vr ** 2 / (len(r) - 1))  # Welch–Satterthwaite
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    result.low, result.high = float(mean - half), float(mean + half)
    result.p = float(2 * stats.t.sf(abs(mean) / se, df))
    return result


def _bootstrap(statistic, n: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    samples = statistic(rng.integers(0, n, (BOOTSTRAP_SAMPLES, n)))
    low, high = np.quantile(samples, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN and does not count as a test)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m, adjusted, running = len(order), [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def seeds_needed(effect: float, spread: float, method: str, alpha: float = ALPHA) -> int | None:
    """Smallest number of pairs (paired) or of runs per arm (welch) for which a two-sided t-test at
    level alpha detects `effect` with POWER, given the observed spread; None if it cannot be said
    (no spread or no effect) and MAX_SEEDS + 1 when even MAX_SEEDS is not enough."""
    if not (spread > 0 and abs(effect) > 0) or math.isnan(spread) or math.isnan(effect):
        return None

    def power(n: int) -> float:
        df = n - 1 if method == "paired" else 2 * n - 2
        se = spread / math.sqrt(n) if method == "paired" else spread * math.sqrt(2 / n)
        critical = stats.t.ppf(1 - alpha / 2, df)
        shift = abs(effect) / se
        upper, lower = stats.nct.sf(critical, df, shift), stats.nct.cdf(-critical, df, shift)
        return float(np.nan_to_num(upper) + np.nan_to_num(lower))  # scipy gives NaN for a vanishing tail

    if power(MAX_SEEDS) < POWER:
        return MAX_SEEDS + 1
    low, high = 2, MAX_SEEDS  # power grows with n: bisect for the first n that reaches POWER
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if power(middle) >= POWER else (middle + 1, high)
    return low
