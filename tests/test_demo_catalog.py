"""The demo data set: deterministic files, id formats, and the structure a model should learn."""

from __future__ import annotations

import collections
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from nextwatch.datasets.demo_dataset import (
    DemoConfig,
    generate_catalog,
    generate_events,
    read_catalog,
    write_demo_dataset,
)

SMALL = DemoConfig(titles=300, viewers=400, seed=11, mean_watches=30)


@pytest.fixture(scope="module")
def small_catalog() -> list[dict]:
    return generate_catalog(SMALL)


@pytest.fixture(scope="module")
def small_events(small_catalog) -> dict[str, np.ndarray]:
    return generate_events(SMALL, small_catalog)


def _file_bytes(dataset) -> tuple[bytes, bytes]:
    return dataset.catalog_path.read_bytes(), dataset.events_path.read_bytes()


def test_same_seed_gives_identical_files(tmp_path):
    first = write_demo_dataset(tmp_path / "a", SMALL)
    second = write_demo_dataset(tmp_path / "b", SMALL)
    assert first.events > 0
    assert _file_bytes(first) == _file_bytes(second)


def test_different_seed_gives_different_files(tmp_path):
    first = write_demo_dataset(tmp_path / "a", SMALL)
    other = write_demo_dataset(tmp_path / "b", DemoConfig(titles=300, viewers=400, seed=12, mean_watches=30))
    catalog_a, events_a = _file_bytes(first)
    catalog_b, events_b = _file_bytes(other)
    assert catalog_a != catalog_b
    assert events_a != events_b


def test_written_files_have_the_documented_shape(tmp_path):
    dataset = write_demo_dataset(tmp_path, SMALL)
    table = pq.read_table(dataset.events_path)
    assert table.schema.names == ["user_id", "content_id", "timestamp"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "double"]
    assert table.num_rows == dataset.events
    assert dataset.titles == SMALL.titles and dataset.viewers == SMALL.viewers
    timestamps = table.column("timestamp").to_numpy()
    users = table.column("user_id").to_pylist()
    assert list(zip(timestamps, users)) == sorted(zip(timestamps, users))
    # Only the two final files: the temporary names were renamed away.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.jsonl", "events.parquet"]


def test_catalog_round_trips_through_read_catalog(tmp_path, small_catalog):
    dataset = write_demo_dataset(tmp_path, SMALL)
    assert read_catalog(dataset.catalog_path) == small_catalog
    first_line = dataset.catalog_path.read_text().splitlines()[0]
    assert next(iter(json.loads(first_line))) == "content_id"


def test_default_catalog_ids_and_fields():
    catalog = generate_catalog(DemoConfig())
    ids = [t["content_id"] for t in catalog]
    assert ids[:3] == ["C000", "C001", "C002"]
    assert ids == [f"C{i:03d}" for i in range(1500)]
    assert "C1010" in ids
    episodes = [t for t in catalog if t["kind"] == "episode"]
    assert 0.3 < len(episodes) / len(catalog) < 0.5
    for title in catalog:
        assert title["kind"] in ("film", "episode")
        assert 1 <= len(title["genres"]) <= 3
        assert 1970 <= title["year"] <= 2026
        assert title["name"]
    assert all({"series", "season", "episode"} <= t.keys() for t in episodes)


def test_series_are_runs_of_consecutive_ids_in_episode_order(small_catalog):
    runs: dict[str, list[int]] = collections.defaultdict(list)
    for i, title in enumerate(small_catalog):
        if title["kind"] == "episode":
            runs[title["series"]].append(i)
    assert runs
    for series, positions in runs.items():
        assert positions == list(range(positions[0], positions[-1] + 1)), series
        episodes = [small_catalog[i] for i in positions]
        assert [(e["season"], e["episode"]) for e in episodes] == sorted((e["season"], e["episode"]) for e in episodes)
        assert all(e["genres"] == episodes[0]["genres"] for e in episodes)
    assert small_catalog[0]["kind"] == "film"


def test_c000_is_strictly_the_most_watched(small_events):
    counts = collections.Counter(small_events["content_id"].tolist()).most_common(2)
    assert counts[0][0] == "C000"
    assert counts[0][1] > counts[1][1]


def test_popularity_decays_with_the_id(small_events):
    codes = np.array([int(c[1:]) for c in small_events["content_id"]])
    per_title = np.bincount(codes, minlength=SMALL.titles)
    assert per_title[:30].mean() > 5 * per_title[-100:].mean()


def test_after_an_episode_usually_comes_the_next_one(small_catalog, small_events):
    position = {t["content_id"]: i for i, t in enumerate(small_catalog)}
    series = [t.get("series") for t in small_catalog]
    followed = continued = 0
    for history in _histories(small_events).values():
        for first, second in zip(history, history[1:]):
            i = position[first]
            if i + 1 < len(series) and series[i] is not None and series[i + 1] == series[i]:
                followed += 1
                continued += position[second] == i + 1
    assert followed > 100
    assert continued / followed > 0.5


def test_timestamps_strictly_increase_per_viewer(small_events):
    order = np.argsort(small_events["user_id"], kind="stable")
    users, times = small_events["user_id"][order], small_events["timestamp"][order]
    same_user = users[1:] == users[:-1]
    assert same_user.any()
    assert (np.diff(times)[same_user] > 0).all()
    assert times.min() >= 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_viewer_ids_never_collide_with_contract_users(small_events):
    users = set(small_events["user_id"].tolist())
    assert len(users) == SMALL.viewers
    assert all(u.startswith("V") and len(u) == 6 for u in users)
    assert not any(u.startswith("U") for u in users)


def test_config_states_the_rule_it_breaks():
    with pytest.raises(ValueError, match="viewers must be at least 1"):
        DemoConfig(viewers=0)


def _histories(events: dict[str, np.ndarray]) -> dict[str, list[str]]:
    histories: dict[str, list[str]] = collections.defaultdict(list)
    # Events are sorted by time, so each viewer's list comes out in watching order.
    for user, content in zip(events["user_id"].tolist(), events["content_id"].tolist()):
        histories[user].append(content)
    return histories
