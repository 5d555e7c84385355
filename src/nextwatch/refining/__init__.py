"""`nextwatch refine`: the sequence model's blended predictions, computed off the request path.

``refiner.py`` is the loop; the Redis side is ``store/event_consumer.py`` (the event log as a
consumer group) and ``store/users.py`` (``histories``, ``save_refined`` and store/refine.lua).
Dependencies point one way: refining uses service, store and model; nothing imports refining
but its command.
"""

from __future__ import annotations


from ..service import LoadedModel
from ..settings import Settings
from ..stopping import stop_on_signals
from ..store import Store
from ..store.event_consumer import EventConsumer
from .refiner import BLOCK_SECONDS, RefineStats, Refiner

DEFAULT_GROUP = "refiner"
DEFAULT_CONSUMER = "refiner"


def run_refine(settings: Settings, group: str = DEFAULT_GROUP, consumer: str = DEFAULT_CONSUMER,
               once: bool = False) -> RefineStats:
    """Refine the predictions of watched users until SIGTERM/SIGINT (which finish the current
    batch first) or, with ``once``, until the event log is drained."""
    store = Store.from_settings(settings)
    source = EventConsumer.from_settings(settings, group, consumer, block_seconds=BLOCK_SECONDS)
    refiner = Refiner(source, store, LoadedModel(store), top_k=settings.cache_top_k,
                      batch_size=settings.refine_batch, max_age_seconds=settings.cache_ttl_seconds)
    try:
        with stop_on_signals(refiner.stop):
            return refiner.run(once=once)
    finally:
        source.close()
        store.close()


__all__ = ["DEFAULT_CONSUMER", "DEFAULT_GROUP", "RefineStats", "Refiner", "run_refine"]
