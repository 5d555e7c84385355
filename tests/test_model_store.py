"""Publishing models: versions, the atomic switch, pruning, and half-written versions."""

import threading

import numpy as np

from conftest import ON_BOTH_TOPOLOGIES, publish_test_model
from nextwatch.model import NextTitleModel

pytestmark = ON_BOTH_TOPOLOGIES  # one Redis and a Redis Cluster alike


def test_versions_count_up_and_old_ones_are_pruned(store):
    versions = [publish_test_model(store, {"C001": [("C002", 1.0)]}) for _ in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    assert store.models.versions() == [3, 4, 5]  # models_kept = 3
    assert store.models.current_version() == 5
    leftover = [k for k in store.client.scan_iter(match=store.keys.model_pattern())
                if store.keys.model_version_of(k.decode()) in (1, 2)]
    assert leftover == []


def test_readers_see_the_old_or_the_new_model_never_a_mix(store):
    """While versions are published over and over, every load is internally consistent: all
    arrays of one version (each version's neighbour of C000 is a different title)."""
    size = 2_000
    popularity = np.linspace(1, 0, size)

    def model_pointing_to(target):
        return NextTitleModel.from_neighbour_lists(popularity, {0: [(target, 1.0)]},
                                                   params={"target": target})

    store.models.publish(model_pointing_to(1))
    problems, loads = [], []
    done = threading.Event()

    def reader():
        from nextwatch.store import Store

        own = Store.from_settings(store.users.settings)
        while not done.is_set():
            version = own.models.current_version()
            model = own.models.load(version)
            if model is None:
                continue  # pruned between the two reads; a reader retries with the new pointer
            loads.append(version)
            if model.recommend(np.array([0]), 1) != [model.params["target"]]:
                problems.append(version)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for target in range(2, 40):
        store.models.publish(model_pointing_to(target))
    done.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert len(set(loads)) > 3  # the readers really saw the switch happen


def test_a_publish_that_died_half_way_is_invisible_and_cleaned_up(store):
    good = publish_test_model(store, {})
    # A publisher that took a version number and wrote one array, then died.
    dead = int(store.client.incr(store.keys.model_sequence))
    store.client.set(store.keys.model_array(dead, "popularity:0"), b"\x00" * 16)
    assert store.models.current_version() == good
    assert dead not in store.models.versions()
    newer = publish_test_model(store, {})
    assert newer == dead + 1
    assert not store.client.exists(store.keys.model_array(dead, "popularity:0"))


def test_activate_and_refuse_unknown_versions(store):
    first = publish_test_model(store, {})
    publish_test_model(store, {})
    store.models.activate(first)
    assert store.models.current_version() == first
    import pytest

    with pytest.raises(KeyError):
        store.models.activate(99)
