"""How long each stage of a training run took, in the log: where a run spends its time, run by
run (the table's tables, the network's epochs, collecting histories)."""

from __future__ import annotations

import contextlib
import logging
import time

log = logging.getLogger(__name__)


@contextlib.contextmanager
def timed(stage: str):
    started = time.monotonic()
    yield
    log.info("%s: %.1f s", stage, time.monotonic() - started)
