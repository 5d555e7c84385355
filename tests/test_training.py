"""The training job against a real local Spark and a real redis-server, on hand-written events
whose transitions are known exactly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextwatch.model import PositionWeights
from nextwatch.training import NoTrainingEvents, train
from nextwatch.training.transitions import next_title_candidates, popularity

# user, title, timestamp. Transitions: A->B twice, A->C once; B->C twice, B->D once.
# Popularity: C 4, A 3, B 3, D 1, E 1.
EVENTS = [
    ("u1", "A", 1.0), ("u1", "B", 2.0), ("u1", "C", 3.0),
    ("u2", "A", 1.0), ("u2", "B", 2.0), ("u2", "D", 3.0),
    ("u3", "A", 1.0), ("u3", "C", 2.0),
    ("u4", "B", 1.0), ("u4", "C", 2.0),
    ("u5", "E", 1.0),
    ("u6", "C", 5.0),
]  # fmt: skip


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "content_id", "timestamp"])
        writer.writerows(rows)
    return str(path)


def write_parquet(path, rows):
    users, titles, stamps = zip(*rows)
    table = pa.table({"user_id": list(users), "content_id": list(titles), "timestamp": list(stamps)})
    pq.write_table(table, path)
    return str(path)


def neighbours(store, version) -> dict[str, list[tuple[str, float]]]:
    """The published neighbour table in content ids: {source: [(target, score), ...]}."""
    model = store.models.load(version)
    ids = store.catalog.all_ids()
    table = {}
    for code in range(model.title_count):
        start, end = model.neighbour_offsets[code], model.neighbour_offsets[code + 1]
        if end > start:
            row = zip(model.neighbour_codes[start:end].tolist(), model.neighbour_scores[start:end].tolist())
            table[ids[code]] = [(ids[target], pytest.approx(score, abs=1e-6)) for target, score in row]
    return table


def test_transition_scores_popularity_and_codes(settings, store, spark, tmp_path):
    result = train(settings, store, spark, [write_csv(tmp_path / "events.csv", EVENTS)], model="transitions")

    assert (result.version, result.events, result.titles) == (1, 12, 5)
    assert store.models.current_version() == 1
    assert neighbours(store, 1) == {
        "A": [("B", 2 / 3), ("C", 1 / 3)],
        "B": [("C", 2 / 3), ("D", 1 / 3)],
    }
    # Fresh catalog: registered most popular first, equal counts by id.
    assert store.catalog.all_ids() == ["C", "A", "B", "D", "E"]
    model = store.models.load(1)
    np.testing.assert_allclose(model.popularity, [1.0, 0.75, 0.75, 0.25, 0.25])
    meta = store.models.metadata(1)
    assert meta["events"] == "12"
    assert json.loads(meta["sources"]) == [str(tmp_path / "events.csv")]  # the event log was empty
    assert float(meta["duration_seconds"]) > 0


def test_top_n_cut_after_normalising_with_ties_by_target_id(settings, store, spark, tmp_path):
    # X -> s twice, X -> p, q, r once each: top 2 is s, then p (the smallest id of the tie).
    rows = [(f"u{i}", "X", 1.0) for i in range(5)]
    rows += [("u0", "s", 2.0), ("u1", "s", 2.0), ("u2", "r", 2.0), ("u3", "q", 2.0), ("u4", "p", 2.0)]
    result = train(settings, store, spark, [write_csv(tmp_path / "e.csv", rows)], top_n=2,
                   model="transitions")

    assert neighbours(store, result.version) == {"X": [("s", 0.4), ("p", 0.2)]}
    assert store.models.load(result.version).params == {"model": "transitions", "top_n": 2, "window": 5, "decay": 0.6}


def test_repeated_title_is_not_a_transition(settings, store, spark, tmp_path):
    rows = [("u1", "A", 1.0), ("u1", "A", 2.0), ("u1", "B", 3.0), ("u1", "B", 4.0), ("u1", "A", 5.0)]
    rows += [("u2", "A", 1.0), ("u2", "A", 2.0)]
    result = train(settings, store, spark, [write_csv(tmp_path / "e.csv", rows)], model="transitions")

    assert neighbours(store, result.version) == {"A": [("B", 1.0)], "B": [("A", 1.0)]}


def test_events_without_any_transition_give_a_popularity_only_model(settings, store, spark, tmp_path):
    rows = [("u1", "A", 1.0), ("u2", "A", 1.0), ("u3", "B", 1.0)]
    result = train(settings, store, spark, [write_csv(tmp_path / "e.csv", rows)])

    model = store.models.load(result.version)
    assert neighbours(store, result.version) == {}
    np.testing.assert_allclose(model.popularity, [1.0, 0.5])
    assert model.recommend(np.array([0]), 5) == [1]


def test_equal_timestamps_keep_file_order(settings, store, spark, tmp_path):
    # Z, X, Y at one instant: neither alphabetical nor reverse order, only the file's.
    rows = [("u1", "Z", 10.0), ("u1", "X", 10.0), ("u1", "Y", 10.0)]
    result = train(settings, store, spark, [write_csv(tmp_path / "e.csv", rows)], include_event_log=False,
                   model="transitions")

    assert neighbours(store, result.version) == {"Z": [("X", 1.0)], "X": [("Y", 1.0)]}


def test_equal_timestamps_across_files_of_a_folder_keep_file_name_order(settings, store, spark, tmp_path):
    # Spark reads the larger file first; the order must still be part-0 then part-1.
    folder = tmp_path / "events"
    folder.mkdir()
    write_parquet(folder / "part-0.parquet", [("u1", "P", 10.0)])
    filler = [(f"f{i}", f"t{i}", float(i)) for i in range(300)]
    write_parquet(folder / "part-1.parquet", filler + [("u1", "Q", 10.0)])
    result = train(settings, store, spark, [str(folder)], include_event_log=False, model="transitions")

    assert neighbours(store, result.version) == {"P": [("Q", 1.0)]}


def test_reads_csv_json_lines_and_parquet(settings, store, spark, tmp_path):
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text(
        # Numeric ids are read as text; a line without a timestamp is skipped.
        '{"user_id": 7, "content_id": "A", "timestamp": 1}\n'
        '{"user_id": 7, "content_id": "C", "timestamp": 2.5}\n'
        '{"user_id": 8, "content_id": "C"}\n'
    )
    sources = [
        write_csv(tmp_path / "e.csv", [("u1", "A", 1.0), ("u1", "B", 2.0)]),
        str(jsonl),
        write_parquet(tmp_path / "e.parquet", [("u2", "A", 1.0), ("u2", "B", 2.0)]),
    ]
    result = train(settings, store, spark, sources, model="transitions")

    assert result.events == 6
    assert neighbours(store, result.version) == {"A": [("B", 2 / 3), ("C", 1 / 3)]}
    assert json.loads(store.models.metadata(result.version)["sources"]) == sources


def test_event_log_is_included_and_registered_codes_are_kept(settings, store, spark, tmp_path):
    assert store.catalog.register(["C", "D", "A"]) == [0, 1, 2]
    codes = {"A": 2, "C": 0, "D": 1}
    live = [("u2", "A", 1.0), ("u2", "C", 2.0), ("u3", "A", 1.0), ("u3", "C", 2.0), ("u1", "D", 3.0)]
    for user, title, stamp in live:
        store.users.record_watch(user, title, codes[title], stamp, None)
    # u1's history starts in the file and goes on in the live log: B -> D crosses sources.
    source = write_csv(tmp_path / "e.csv", [("u1", "A", 1.0), ("u1", "B", 2.0)])

    result = train(settings, store, spark, [source], model="transitions")

    assert result.events == 7
    assert store.catalog.all_ids() == ["C", "D", "A", "B"]  # B is new, the rest kept their codes
    assert neighbours(store, result.version) == {"A": [("C", 2 / 3), ("B", 1 / 3)], "B": [("D", 1.0)]}
    assert json.loads(store.models.metadata(result.version)["sources"]) == [source, "redis:event-log"]

    without_log = train(settings, store, spark, [source], include_event_log=False, model="transitions")
    assert without_log.events == 2
    assert neighbours(store, without_log.version) == {"A": [("B", 1.0)]}


def test_second_training_publishes_a_new_current_version(settings, store, spark, tmp_path):
    source = write_csv(tmp_path / "e.csv", EVENTS)
    first = train(settings, store, spark, [source], model="transitions")
    store.users.record_watch("u5", "A", store.catalog.register(["A"])[0], 2.0, None)  # E -> A
    second = train(settings, store, spark, [source], weights=PositionWeights(window=3, decay=0.5),
                   model="transitions", top_n=50)

    assert (first.version, second.version) == (1, 2)
    assert store.models.current_version() == 2
    assert store.models.versions() == [1, 2]
    assert "E" not in neighbours(store, 1)
    assert neighbours(store, 2)["E"] == [("A", 1.0)]
    loaded = store.models.load(2)
    assert loaded.weights == PositionWeights(window=3, decay=0.5)
    assert loaded.params == {"model": "transitions", "top_n": 50, "window": 3, "decay": 0.5}


def test_no_events_raises_and_publishes_nothing(settings, store, spark, tmp_path):
    with pytest.raises(NoTrainingEvents, match="no watch events to train on"):
        train(settings, store, spark)  # empty event log, no files
    with pytest.raises(NoTrainingEvents, match="user_id, content_id, timestamp"):
        train(settings, store, spark, [write_csv(tmp_path / "empty.csv", [])])

    assert store.models.versions() == []
    assert store.models.current_version() == 0


def test_missing_file_and_missing_column_are_named(settings, store, spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        train(settings, store, spark, [str(tmp_path / "nope.csv")])
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,title,timestamp\nu1,A,1\n")
    with pytest.raises(ValueError, match="missing content_id"):
        train(settings, store, spark, [str(bad)])


def test_transforms_count_and_rank_without_the_store(spark):
    events = spark.createDataFrame(EVENTS, "user_id string, content_id string, timestamp double")

    counts = {row.content_id: row.events for row in popularity(events).collect()}
    candidates = sorted(tuple(row) for row in next_title_candidates(events, top_n=1).collect())

    assert counts == {"A": 3, "B": 3, "C": 4, "D": 1, "E": 1}
    assert candidates == [("A", "B", 2, pytest.approx(2 / 3), 1), ("B", "C", 2, pytest.approx(2 / 3), 1)]


def test_session_stays_on_loopback(spark):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.ui.enabled") == "false"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "8"


def test_an_event_in_both_the_archive_and_the_event_log_counts_once(spark, settings, store, tmp_path):
    """The stack's trainer reads the archive and the live log; the archive keeps each event's
    stream id, so an event still in the log after it was archived is not counted twice."""
    from nextwatch.archiving import run_archive
    from nextwatch.training.job import train

    codes = dict(zip(["A", "B", "C"], store.catalog.register(["A", "B", "C"])))
    for offset, title in enumerate(["A", "B", "C"]):
        store.users.record_watch("U1", title, codes[title], 1000.0 + offset, None)
    archive_settings = settings.with_overrides(archive_dir=str(tmp_path / "archive"))
    run_archive(archive_settings, group="archiver", consumer="test", batch_size=100, flush_seconds=0.1, once=True)
    assert store.events.length() == 3  # archived, and still in the capped stream
    result = train(settings, store, spark, sources=[str(tmp_path / "archive")], include_event_log=True)
    assert result.events == 3


def test_an_archive_folder_without_files_yet_is_no_error(spark, settings, store, tmp_path):
    from nextwatch.training.job import train

    (tmp_path / "archive").mkdir()
    codes = store.catalog.register(["A", "B"])
    store.users.record_watch("U1", "A", codes[0], 1.0, None)
    store.users.record_watch("U1", "B", codes[1], 2.0, None)
    assert train(settings, store, spark, sources=[str(tmp_path / "archive")]).events == 2


def test_the_driver_stays_on_loopback_only_for_masters_on_this_machine():
    from nextwatch.training.spark import runs_on_this_machine

    assert runs_on_this_machine("local[2]") and runs_on_this_machine("spark://127.0.0.1:7077")
    assert runs_on_this_machine("spark://localhost:7077")
    assert not runs_on_this_machine("spark://spark-master:7077")  # the compose stack's cluster


def test_default_model_is_tuned_on_a_holdout_and_records_it(settings, store, spark, tmp_path):
    result = train(settings, store, spark, [write_csv(tmp_path / "e.csv", EVENTS)], include_event_log=False)

    model = store.models.load(result.version)
    meta = store.models.metadata(result.version)
    assert model.params["model"] == "neighbours" and model.params["top_n"] == 100
    assert model.params["gamma"] in (0.7, 0.85) and model.params["back"] in (0.0, 0.25, 0.5)
    assert model.params["eta"] in (0.0, 0.3)
    assert model.weights == PositionWeights(window=10, decay=0.6)
    assert 0.0 <= float(meta["ndcg@10"]) <= float(meta["hr@10"]) <= 1.0
    assert meta["holdout_users"] == "2"  # u1 and u2 have three events; their last is held out
    assert len(json.loads(meta["grid"])) == 12
    # Built from all events: A is followed by B (twice) and C, so both are A's neighbours.
    assert {target for target, _ in neighbours(store, result.version)["A"]} >= {"B", "C"}
