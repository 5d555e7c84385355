"""The deterministic demo data set: a synthetic catalog and the watch history of synthetic viewers.

The same ``DemoConfig`` always gives byte-identical files, so the demo, the tests and the
benchmarks all see the same data. Files written by ``write_demo_dataset``:

    catalog.jsonl   one title per line (see ``generate_catalog`` for the keys)
    events.parquet  columns user_id (string), content_id (string), timestamp (float64, unix
                    seconds), sorted by (timestamp, user_id)

Catalog generation lives in ``demo_catalog``, viewer simulation in ``demo_viewers``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .demo_catalog import generate_catalog
from .demo_viewers import simulate_viewers, viewer_id

__all__ = ["DemoConfig", "DemoDataset", "generate_catalog", "generate_events", "read_catalog",
           "write_demo_dataset"]

EVENTS_SCHEMA = pa.schema([("user_id", pa.string()), ("content_id", pa.string()), ("timestamp", pa.float64())])
# Rows per Parquet row group: ids become strings one group at a time, so memory stays flat.
ROW_GROUP_ROWS = 1_000_000


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and seed of the demo data. About ``viewers * mean_watches`` events are generated."""

    titles: int = 1500
    viewers: int = 3000
    seed: int = 7
    mean_watches: int = 40

    def __post_init__(self):
        for name in ("titles", "viewers", "mean_watches"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"DemoConfig.seed must not be negative, got {self.seed}")


@dataclasses.dataclass(frozen=True)
class DemoDataset:
    """What ``write_demo_dataset`` wrote."""

    catalog_path: Path
    events_path: Path
    titles: int
    viewers: int
    events: int


def generate_events(config: DemoConfig, catalog: list[dict]) -> dict[str, np.ndarray]:
    """The watch history as columns ``user_id`` and ``content_id`` (numpy str arrays) and
    ``timestamp`` (float64), sorted by (timestamp, user_id).

    Convenient for small sizes; ``write_demo_dataset`` streams large ones without building
    the string columns in memory.
    """
    viewers, titles, timestamps = simulate_viewers(config, catalog)
    user_ids = np.array([viewer_id(j) for j in range(config.viewers)])
    content_ids = np.array([t["content_id"] for t in catalog])
    return {"user_id": user_ids[viewers], "content_id": content_ids[titles], "timestamp": timestamps}


def write_demo_dataset(out_dir: str | os.PathLike, config: DemoConfig = DemoConfig()) -> DemoDataset:
    """Generate the demo data and write ``catalog.jsonl`` and ``events.parquet`` in ``out_dir``.

    Each file is written under a temporary name and renamed when complete, so an interrupted
    run leaves either the previous file or none, never a truncated one under the final name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog = generate_catalog(config)
    viewers, titles, timestamps = simulate_viewers(config, catalog)

    catalog_path = out / "catalog.jsonl"
    with _replaced_when_done(catalog_path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for title in catalog:
                f.write(json.dumps(title, separators=(",", ":")) + "\n")

    user_ids = pa.array([viewer_id(j) for j in range(config.viewers)], pa.string())
    content_ids = pa.array([t["content_id"] for t in catalog], pa.string())
    events_path = out / "events.parquet"
    with _replaced_when_done(events_path) as tmp:
        with pq.ParquetWriter(tmp, EVENTS_SCHEMA) as writer:
            for start in range(0, len(timestamps), ROW_GROUP_ROWS):
                rows = slice(start, start + ROW_GROUP_ROWS)
                writer.write_table(pa.Table.from_arrays(
                    [user_ids.take(viewers[rows]), content_ids.take(titles[rows]), pa.array(timestamps[rows])],
                    schema=EVENTS_SCHEMA,
                ))
    # Every viewer watches at least one title, so all of them appear in the events.
    return DemoDataset(catalog_path, events_path, titles=len(catalog), viewers=config.viewers,
                       events=len(timestamps))


def read_catalog(path: str | os.PathLike) -> list[dict]:
    """The titles of a ``catalog.jsonl`` file, in file order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextlib.contextmanager
def _replaced_when_done(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success."""
    # Named by hand rather than by mkstemp, whose 0600 mode would outlive the rename.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
