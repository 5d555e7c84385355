"""Figures of a model trained with several seeds: the mean, and how far chance moves it.

The sequence network's figures move with its seed (initial weights, batch order, dropout), so
one run says little about a difference of a few thousandths. Over N seeds, the standard error
of the mean is the sample standard deviation (N - 1 in the denominator) over sqrt(N); with one
seed it is unknown (None), not zero.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["mean_and_standard_error", "seed_summary"]


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float | None]:
    if not values:
        raise ValueError("needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def seed_summary(runs: Sequence[dict], names: Sequence[str]) -> dict:
    """``runs``: one dict of figures per seed. The mean and standard error of each of ``names``."""
    summary: dict = {"mean": {}, "standard_error": {}}
    for name in names:
        summary["mean"][name], summary["standard_error"][name] = mean_and_standard_error([r[name] for r in runs])
    return summary
