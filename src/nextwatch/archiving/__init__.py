"""`nextwatch archive`: the durable, exactly-once archive of the event log.

``archiver.py`` is the loop (and the crash-point analysis), ``files.py`` the folder layout and
the durable file writes; the Redis side is ``store/event_consumer.py``.
"""

from __future__ import annotations

from typing import Callable

from ..settings import Settings
from ..stopping import stop_on_signals
from ..store.event_consumer import EventConsumer, GroupLag, read_group_lag
from .archiver import BLOCK_SECONDS, ArchiveStats, Archiver
from .files import SCHEMA, ArchiveBusy, ArchiveFolder

DEFAULT_GROUP = "archiver"
DEFAULT_CONSUMER = "archiver"


def run_archive(settings: Settings, group: str = DEFAULT_GROUP, consumer: str = DEFAULT_CONSUMER,
                batch_size: int = 10_000, flush_seconds: float = 5.0, once: bool = False,
                checkpoint: Callable[[str], None] | None = None) -> ArchiveStats:
    """Archive the event log into ``settings.archive_dir`` until SIGTERM/SIGINT (or, with
    ``once``, until it is drained). Raises ArchiveBusy if another archiver holds the folder."""
    folder = ArchiveFolder(settings.archive_dir)
    folder.lock()
    source = EventConsumer.from_settings(settings, group, consumer, block_seconds=BLOCK_SECONDS)
    options = {"checkpoint": checkpoint} if checkpoint else {}
    archiver = Archiver(source, folder, batch_size=batch_size, flush_seconds=flush_seconds, **options)
    try:
        with stop_on_signals(archiver.stop):
            return archiver.run(once=once)
    finally:
        source.close()
        folder.unlock()


__all__ = ["ArchiveBusy", "ArchiveFolder", "ArchiveStats", "Archiver", "DEFAULT_CONSUMER", "DEFAULT_GROUP",
           "GroupLag", "SCHEMA", "read_group_lag", "run_archive"]
