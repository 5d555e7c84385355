"""The demo's data: the generated catalog and watch history on disk, the catalog in Redis, and a
few titles "out today" added once a day (watched by nobody, so only their metadata can get them
recommended; ``new_title_report.py`` says how often that happens)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..settings import Settings
from . import parts


def set_up_data(settings: Settings, layout: parts.Layout, seed: int) -> int:
    """Generate the demo data once and store its catalog in Redis; the published model version (0: none)."""
    from ..datasets.demo_dataset import DemoConfig, read_catalog, write_demo_dataset
    from ..store import Store

    demo_dir = layout.demo_events.parent
    catalog_file = demo_dir / "catalog.jsonl"
    if not (catalog_file.exists() and layout.demo_events.exists()):
        print(f"generating the demo catalog and watch history in {demo_dir} ...", flush=True)
        write_demo_dataset(demo_dir, DemoConfig(seed=seed))
    layout.archive_dir.mkdir(parents=True, exist_ok=True)  # the trainer reads it from its first run
    store = Store.from_settings(settings)
    try:
        if store.catalog.first_title() is None:
            store.catalog.save_info(read_catalog(catalog_file))
        _add_new_arrivals(store, demo_dir, read_catalog(catalog_file))
        return store.models.current_version() or 0
    finally:
        store.close()


def _add_new_arrivals(store, demo_dir: Path, catalog: list[dict]) -> None:
    """Films out today, once a day: no viewer has watched them, so only their metadata can get
    them recommended (the demo reports how often it does)."""
    from ..datasets.demo_catalog import new_arrivals

    marker = demo_dir / "arrivals.json"
    last = json.loads(marker.read_text()) if marker.exists() else {"batch": 0, "released_at": 0}
    now = int(time.time())
    if now - last["released_at"] < 86_400:
        return
    titles = new_arrivals(catalog, last["batch"] + 1, now)
    store.catalog.save_info(titles)
    marker.write_text(json.dumps({"batch": last["batch"] + 1, "released_at": now}))
    print(f"added {len(titles)} new titles, out today and watched by nobody yet: "
          f"{', '.join(t['content_id'] for t in titles)}", flush=True)
