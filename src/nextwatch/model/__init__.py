"""Pure NumPy models: no redis, flask or pyspark here, so serving, training and evaluation
share one scorer."""

from .next_title import NextTitleModel, PositionWeights

__all__ = ["NextTitleModel", "PositionWeights"]
