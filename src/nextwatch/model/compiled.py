"""Compile the model's numba kernels (``kernels.py``) ahead of the first request.

numba compiles a kernel at its first call and keeps the machine code in ``__pycache__`` beside
the module (``cache=True``). Compiling them all takes about 10-30 s on a small machine; loading
them from that cache, well under a second. ``nextwatch serve`` calls ``compile_kernels`` before
its workers start, so that no watch waits for a compiler, and the Dockerfile runs this module so
that the image carries the cache.

numba compiles one version of a kernel per combination of argument types, and a read-only array
is a type of its own. A model loaded from Redis (``from_payload``) holds read-only arrays; one
fitted in memory does not. So the warm-up runs every path on both, or the first watch of every
worker would still wait seconds for the compiler (tests/test_compiled_kernels.py).

    python -m nextwatch.model.compiled
"""

from __future__ import annotations

import time

import numpy as np


def compile_kernels() -> float:
    """Run every kernel once on a tiny random model, as fitted and as loaded from Redis
    (compiling or loading each version); the seconds taken."""
    from .adjustments import Adjustments
    from .next_title import NextTitleModel
    from .sequence import SequenceModel

    started = time.monotonic()
    rng = np.random.default_rng(0)
    titles, neighbours = 40, 5
    model = NextTitleModel(rng.random(titles), np.arange(titles + 1) * neighbours,
                           rng.integers(0, titles, titles * neighbours).astype(np.int32),
                           rng.random(titles * neighbours).astype(np.float32),
                           sequence=SequenceModel.random(titles, dim=8, blocks=2, max_length=6), sequence_weight=1.0)
    loaded = NextTitleModel.from_payload(*model.to_payload())
    history = np.array([3, 7, 7, 11])
    for each in (model, loaded):
        each.recommend(history, 5)
        each.recommend(history, 5, adjustments=Adjustments(demoted=np.array([1])))  # serving's rules path
        each.dense_scores(history)
        each.sequence.batch_scores([history, history[:1]])
    return time.monotonic() - started


if __name__ == "__main__":
    print(f"nextwatch: model kernels ready in {compile_kernels():.1f} s")
