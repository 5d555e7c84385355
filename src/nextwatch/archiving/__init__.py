"""`nextwatch archive`: the durable, exactly-once archive of the event log.

``archiver.py`` is the batching and the crash-point analysis, ``files.py`` the folder layout and
the durable file writes; the Redis side is the consumer loop (``store/consumer_loop.py``) over
``store/event_consumer.py``.
"""

from __future__ import annotations

from typing import Callable

from ..settings import Settings
from ..stopping import stop_on_signals
from ..store import Store
from ..store.event_consumer import EventConsumer
from ..store.group_lag import GroupLag, ShardLag, read_group_lag
from .archiver import ArchiveStats, Archiver
from .files import SCHEMA, ArchiveBusy, ArchiveFolder, ArchiveUnusable, BatchRecord

DEFAULT_GROUP = "archiver"
DEFAULT_CONSUMER = "archiver"


def run_archive(settings: Settings, group: str = DEFAULT_GROUP, consumer: str = DEFAULT_CONSUMER,
                batch_size: int = 10_000, flush_seconds: float = 5.0, once: bool = False,
                checkpoint: Callable[[str], None] | None = None) -> ArchiveStats:
    """Archive the event log into ``settings.archive_dir`` until SIGTERM/SIGINT (or, with
    ``once``, until it is drained). Raises ArchiveBusy if another archiver holds the folder,
    ArchiveUnusable for a folder it must not add to, SettingsError when the data in Redis was
    written with another key layout or shard count."""
    folder = ArchiveFolder(settings.archive_dir)
    folder.lock()
    try:
        store = Store.from_settings(settings)  # checks the key layout: the shard count names the streams
        try:
            options = {"checkpoint": checkpoint} if checkpoint else {}
            archiver = Archiver(EventConsumer(store.client, store.keys, group, consumer), folder,
                                batch_size=batch_size, flush_seconds=flush_seconds, **options)
            with stop_on_signals(archiver.stop):
                return archiver.run(once=once)
        finally:
            store.close()
    finally:
        folder.unlock()


__all__ = ["ArchiveBusy", "ArchiveFolder", "ArchiveStats", "ArchiveUnusable", "Archiver", "BatchRecord",
           "DEFAULT_CONSUMER", "DEFAULT_GROUP", "GroupLag", "SCHEMA", "ShardLag", "read_group_lag", "run_archive"]
