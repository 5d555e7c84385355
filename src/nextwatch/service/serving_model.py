"""Which model version serves, and that model, held by each serving process.

The current version lives in its own hash slot (``{model}``), apart from every user's keys, so a
request cannot read it with the user's keys in one call on a Redis Cluster. Each process keeps
its own copy instead:

- a listener thread subscribes to the switch announcements that ``ModelStore.activate`` and
  ``rollback`` publish, and takes a new version as soon as it is announced (milliseconds);
- as a back-up, a request reads the pointer itself when the copy is older than
  ``model_refresh_seconds`` (1 s by default; 0 reads it on every request), so a lost message
  (a dropped subscription, a failover) delays a switch by at most that long.

A cached prediction carries the stamp of the version it was computed with (store/user_state.py), so
once a process knows the new version it serves no prediction of the old one. The model itself is
loaded once per version, by the first request that needs it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref

from .. import metrics
from ..errors import StoreUnavailable
from ..model import NextTitleModel
from ..store import Store

log = logging.getLogger("nextwatch.service")

LISTEN_TIMEOUT_SECONDS = 1.0  # how often the listener checks that its process still wants it
LISTEN_BACKOFF_MAX = 5.0


class ServingModel:
    def __init__(self, store: Store, refresh_seconds: float, clock=time.monotonic):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.model: NextTitleModel | None = None
        self._version: int | None = None
        self._checked_at = -math.inf
        self._load_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._closed = False

    # -- the version ---------------------------------------------------------------------------
    def version(self) -> int:
        """The current model version (0: none published) as this process knows it: announced,
        or read at most ``refresh_seconds`` ago. StoreUnavailable only while it was never read."""
        if self.clock() - self._checked_at >= self.refresh_seconds:
            self._poll()
        if self._listener is None and self.refresh_seconds > 0:
            self._start_listener()
        return self._version  # type: ignore[return-value]

    def known_version(self) -> int | None:
        """The last version this process learned, without asking Redis (None: never learned)."""
        return self._version

    def _poll(self) -> None:
        # One thread reads while the others go on with the copy they have, except the first time.
        if not self._poll_lock.acquire(blocking=self._version is None):
            return
        try:
            self._set(self.store.models.current_version())
        except StoreUnavailable:
            if self._version is None:
                raise
            self._checked_at = self.clock()  # try again after an interval, not on every request
        finally:
            self._poll_lock.release()

    def learn(self, version: int) -> None:
        """A version announced by a switch: it is current from now on."""
        self._set(version)

    def _set(self, version: int) -> None:
        if version != self._version:
            metrics.serving_model_version.set(version)
        self._version = version
        self._checked_at = self.clock()

    # -- the model -----------------------------------------------------------------------------
    def model_for(self, version: int) -> NextTitleModel | None:
        """The model of ``version`` (loaded once), or None when none is published or it was
        pruned while we looked (the previous model keeps serving then)."""
        model = self.model
        if version == 0:
            return None
        if model is not None and model.version == version:
            return model
        with self._load_lock:
            if self.model is None or self.model.version != version:
                loaded = self.store.models.load(version)
                if loaded is not None:
                    self.model = loaded
            return self.model

    # -- the listener --------------------------------------------------------------------------
    def _start_listener(self) -> None:
        with self._load_lock:
            if self._listener is not None or self._closed:
                return
            # The thread holds only a weak reference: when the service is dropped (a test's app),
            # the thread ends within LISTEN_TIMEOUT_SECONDS instead of living on.
            self._listener = threading.Thread(target=_listen, args=(weakref.ref(self),), daemon=True,
                                              name="nextwatch-model-switches")
            self._listener.start()

    def close(self) -> None:
        self._closed = True


def _listen(owner_ref) -> None:
    failures = 0
    while True:
        owner = owner_ref()
        if owner is None or owner._closed:
            return
        try:
            switches = owner.store.models.listen_for_switches()
        except Exception:  # noqa: BLE001 - Redis away, or the store closed under us: retry later
            del owner
            failures += 1
            time.sleep(min(LISTEN_BACKOFF_MAX, 0.1 * 2 ** failures))
            continue
        # Messages sent while unsubscribed are lost: the next request polls.
        owner._checked_at = -math.inf
        del owner
        failures = 0
        try:
            while True:
                version = switches.next_version(LISTEN_TIMEOUT_SECONDS)
                owner = owner_ref()
                if owner is None or owner._closed:
                    return
                if version is not None:
                    log.info("model version %d announced", version)
                    owner.learn(version)
                del owner
        except Exception as failure:  # noqa: BLE001 - the thread must outlive any connection problem
            log.debug("model switch subscription lost (%s); subscribing again", failure)
            failures += 1
            time.sleep(min(LISTEN_BACKOFF_MAX, 0.1 * 2 ** failures))
        finally:
            switches.close()
