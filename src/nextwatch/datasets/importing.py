"""Importing a data set: events read with the readers become a Parquet file that `nextwatch
train --events` reads; titles go to the catalog. No Redis here: the command passes a
``save_titles`` callable from the store."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from .readers import read_events
from .title_metadata import METADATA_FORMATS, read_title_metadata
from .title_readers import TITLE_FORMATS, TitlesResult, read_titles

ALL_TITLE_FORMATS = TITLE_FORMATS + METADATA_FORMATS


class BadTitleRows(ValueError):
    """A title metadata file has bad rows: nothing of it was stored."""

    def __init__(self, result: TitlesResult):
        super().__init__(f"{result.problem_count} bad title rows: no title was stored")
        self.result = result


def load_titles(path: str, fmt: str) -> TitlesResult:
    """Titles from a MovieLens title file (bad rows skipped and reported, as MovieLens files are
    read) or a title metadata file (``csv``, ``jsonl``: any bad row refuses the whole file)."""
    if fmt in METADATA_FORMATS:
        result = read_title_metadata(path, fmt)
        if result.problem_count:
            raise BadTitleRows(result)
        return result
    return read_titles(path, fmt)

ROW_GROUP = 1_000_000


@dataclasses.dataclass(frozen=True)
class ImportReport:
    events_path: Path | None  # None: titles alone
    events: int
    bad_rows: int
    problems: list[tuple[int, str]]
    titles: int
    bad_title_rows: int
    seconds: float


def import_dataset(path: str | None, fmt: str | None, out: str | os.PathLike | None, titles_path: str | None = None,
                   titles_format: str | None = None, save_titles: Callable[[list[dict]], int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Read ``path`` (format ``fmt``), write its events to the Parquet file ``out`` (written to
    a temporary name first, so a killed import leaves no half file), and store the titles of
    ``titles_path`` through ``save_titles``. Titles are read before anything is written, so a
    title file with bad rows stops the import before it writes anything. ``path`` None: the
    titles alone."""
    started = time.monotonic()
    titles = load_titles(titles_path, titles_format or fmt) if titles_path else None
    titles_saved = 0
    if path is None:
        if save_titles is not None and titles is not None:
            titles_saved = save_titles(titles.titles)
        return ImportReport(None, 0, 0, [], titles_saved, titles.problem_count if titles else 0,
                            time.monotonic() - started)
    result = read_events(path, fmt, progress=progress)
    events = result.events
    columns = {
        "user_id": pa.array(events.user_id(), pa.string()),
        "content_id": pa.array(events.content_id(), pa.string()),
        "timestamp": pa.array(events.timestamp, pa.float64()),
    }
    if events.event_type is not None:
        columns["event_type"] = pa.array(events.event_type, pa.string())
    if events.progress is not None:
        columns["progress"] = pa.array(events.progress, pa.float64())
    # File order is the tie-break between equal timestamps; training keeps it by reading the
    # rows in the order written.
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    pq.write_table(pa.table(columns), partial, row_group_size=ROW_GROUP)
    os.replace(partial, out)

    if titles is not None and save_titles is not None:
        titles_saved = save_titles(titles.titles)
    return ImportReport(out, len(events), result.problem_count, result.problems, titles_saved,
                        titles.problem_count if titles else 0, time.monotonic() - started)
