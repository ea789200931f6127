"""The statistics behind a claim's verdict: a 95% confidence interval of a difference, and its reading.

- ``paired_interval(better, worse)``: Student t on per-seed differences (arms that share seeds).
- ``welch_interval(better, worse)``: Welch's t (arms without shared seeds).
- ``verdict(interval, margin)``: held when the whole interval lies above the margin, not held when it lies below,
  inconclusive otherwise, and always inconclusive with fewer than ``MIN_SEEDS`` per arm.

``Interval.detectable`` is the smallest true difference the design would detect with 80 % power at the 5 % level
((t_{0.975} + t_{0.80}) · standard error): what a reader needs to judge an inconclusive result.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as _scipy

MIN_SEEDS = 3
LEVEL = 0.95
POWER = 0.80
HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


@dataclass(frozen=True)
class Interval:
    """The difference better − worse: its estimate, 95% interval, the test used and the arms' sizes."""

    diff: float
    low: float
    high: float
    detectable: float
    test: str            # "paired t" | "Welch t" | "one-sample t"
    n_better: int
    n_worse: int


def _t(q: float, df: float) -> float:
    return float(_scipy.t.ppf(q, df))


def _interval(diff: float, se: float, df: float, test: str, n_better: int, n_worse: int) -> Interval:
    if df <= 0 or not math.isfinite(se):
        return Interval(diff, -math.inf, math.inf, math.inf, test, n_better, n_worse)
    half = _t(0.5 + LEVEL / 2, df) * se
    detectable = (_t(0.5 + LEVEL / 2, df) + _t(POWER, df)) * se
    return Interval(diff, diff - half, diff + half, detectable, test, n_better, n_worse)


def paired_interval(better: list[float], worse: list[float]) -> Interval:
    """t interval of the mean per-pair difference (``better[i]`` and ``worse[i]`` share seed i)."""
    if len(better) != len(worse):
        raise ValueError(f"paired arms differ in length: {len(better)} vs {len(worse)}")
    d = [b - w for b, w in zip(better, worse)]
    n = len(d)
    if n < 2:
        return Interval(d[0] if d else math.nan, -math.inf, math.inf, math.inf, "paired t", n, n)
    return _interval(statistics.fmean(d), statistics.stdev(d) / math.sqrt(n), n - 1, "paired t", n, n)


def one_sample_interval(values: list[float], threshold: float) -> Interval:
    """t interval of mean(values) − threshold (a claim about each row against a fixed number)."""
    n = len(values)
    diff = statistics.fmean(values) - threshold if values else math.nan
    if n < 2:
        return Interval(diff, -math.inf, math.inf, math.inf, "one-sample t", n, 0)
    return _interval(diff, statistics.stdev(values) / math.sqrt(n), n - 1, "one-sample t", n, 0)


def welch_interval(better: list[float], worse: list[float]) -> Interval:
    """Welch's t interval of mean(better) − mean(worse) (unequal variances, Welch–Satterthwaite df)."""
    nb, nw = len(better), len(worse)
    diff = statistics.fmean(better) - statistics.fmean(worse) if nb and nw else math.nan
    if nb < 2 or nw < 2:
        return Interval(diff, -math.inf, math.inf, math.inf, "Welch t", nb, nw)
    vb, vw = statistics.variance(better) / nb, statistics.variance(worse) / nw
    se = math.sqrt(vb + vw)
    if se == 0.0:
        return Interval(diff, diff, diff, 0.0, "Welch t", nb, nw)
    df = (vb + vw) ** 2 / (vb ** 2 / (nb - 1) + vw ** 2 / (nw - 1))
    return _interval(diff, se, df, "Welch t", nb, nw)


def verdict(interval: Interval, margin: float) -> tuple[str, str]:
    """(held / not held / inconclusive, why) for the claim "better − worse ≥ margin"."""
    arms = [n for n in (interval.n_better, interval.n_worse) if n or interval.test != "one-sample t"]
    if min(arms) < MIN_SEEDS:
        return INCONCLUSIVE, f"fewer than {MIN_SEEDS} seeds per arm (n = {'/'.join(map(str, arms))})"
    if interval.low > margin:
        return HELD, f"the 95% CI lies above the margin {margin:+g}"
    if interval.high < margin:
        return NOT_HELD, f"the 95% CI lies below the margin {margin:+g}"
    return INCONCLUSIVE, (f"the 95% CI contains the margin {margin:+g}; this design detects differences of "
                          f"about {interval.detectable:.3g} or more")
