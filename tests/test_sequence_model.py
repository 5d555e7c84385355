"""The sequence model: the NumPy scorer against the PyTorch network it was trained as, training on
a rule only a sequence reader can learn, the blend with the table, publishing and loading, and
the fit that tunes the blend weight (real local Spark, real redis-server)."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch

from nextwatch.model import NextTitleModel, PositionWeights
from nextwatch.model.blend import top_codes
from nextwatch.model.next_title import standardised, standardised_rows
from nextwatch.model.sequence import SequenceModel
from nextwatch.training.fit import SEQUENCE_WEIGHTS, FitParams, fit_next_title
from nextwatch.training.network import exported, torch_network
from nextwatch.training.sequence_training import TIME_CAP, SequenceOptions, train_sequence_model

SMALL = SequenceOptions(dim=16, blocks=2, heads=2, dropout=0.0, max_length=8, seed=3)


def torch_scores(network, history, max_length):
    inputs = torch.tensor([(np.asarray(history[-max_length:]) + 1).tolist()])
    network.eval()
    with torch.no_grad():
        state = network(inputs)[0, -1]
        return (state @ network.items.weight[1:].T).numpy()


def test_numpy_scorer_matches_the_torch_network():
    network = torch_network(30, SMALL)
    with torch.no_grad():  # move the layer norms and biases off their defaults, so they count
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model = exported(network, SMALL)
    histories = [np.array([3]), np.array([3, 4, 5]), np.arange(13) % 30, np.array([29, 0, 29, 7]), np.arange(8)]
    for history in histories:
        assert np.allclose(model.scores(history), torch_scores(network, history, SMALL.max_length), atol=1e-5)
    batch = model.batch_scores(histories)
    for row, history in zip(batch, histories):
        assert np.allclose(row, model.scores(history), atol=1e-5)


def test_unknown_titles_are_skipped_and_empty_histories_score_zero():
    model = SequenceModel.random(20, seed=1)
    assert np.allclose(model.scores(np.array([4, 25, 6])), model.scores(np.array([4, 6])))
    assert not model.scores(np.array([], dtype=np.int64)).any()
    assert not model.scores(np.array([40])).any()


def stride_histories(users: int, titles: int, seed: int):
    """Each user steps through the titles by a stride of their own (1, 2 or 3): from the last
    title alone the next is ambiguous, from the last two it is certain."""
    rng = np.random.default_rng(seed)
    histories = []
    for _ in range(users):
        stride, start, length = rng.integers(1, 4), rng.integers(0, titles), rng.integers(4, 10)
        histories.append((start + stride * np.arange(length)) % titles)
    return histories


def test_training_learns_a_rule_that_needs_the_sequence():
    titles = 37
    full = stride_histories(600, titles, seed=0)
    train_part = [h[:-1] for h in full]
    targets = np.array([h[-1] for h in full])
    options = dataclasses.replace(SMALL, dim=32, batch_size=32, max_epochs=40, patience=8, learning_rate=1e-2)
    model, report = train_sequence_model(train_part, titles, options, holdout=(train_part, targets))
    top = [int(np.argmax(np.where(np.isin(np.arange(titles), h), -np.inf, model.scores(h)))) for h in train_part]
    assert np.mean(np.array(top) == targets) > 0.9
    assert report.holdout_ndcg[report.best_epoch - 1] == max(report.holdout_ndcg)
    assert report.holdout_ndcg[report.best_epoch - 1] > report.holdout_ndcg[0]


def test_training_for_given_epochs_the_time_cap_and_a_warm_start(caplog):
    import time

    histories = stride_histories(100, 11, seed=1)
    trained, report = train_sequence_model(histories, 11, dataclasses.replace(SMALL, max_epochs=50), epochs=2)
    assert (report.epochs, report.best_epoch, report.stopped_by, report.holdout_ndcg) == (2, 2, "epochs", [])
    assert not report.time_capped and "time cap reached" not in caplog.text
    passed = time.monotonic()  # a cap already reached: not a single batch runs
    fresh, report = train_sequence_model(histories, 11, SMALL, epochs=5, cap=passed)
    assert (report.epochs, report.stopped_by, report.time_capped) == (0, TIME_CAP, True)
    assert "time cap reached" in caplog.text
    # Started from a trained network and stopped before a batch: that network, array for array
    # (loading is the inverse of exporting).
    again, _ = train_sequence_model(histories, 11, SMALL, epochs=1, start=trained, cap=passed)
    assert again.arrays.keys() == trained.arrays.keys()
    assert all(np.array_equal(again.arrays[name], trained.arrays[name]) for name in trained.arrays)
    assert not np.array_equal(fresh.arrays["items"], trained.arrays["items"])
    # Continued for an epoch, it moves on from there, not from fresh weights.
    continued, report = train_sequence_model(histories, 11, SMALL, epochs=1, start=trained)
    assert report.epochs == 1
    moved = np.abs(continued.arrays["items"] - trained.arrays["items"]).mean()
    assert 0 < moved < np.abs(fresh.arrays["items"] - trained.arrays["items"]).mean()
    with pytest.raises(ValueError, match="titles"):
        train_sequence_model(histories, 12, SMALL, epochs=1, start=trained)


@pytest.fixture
def table():
    popularity = np.linspace(1.0, 0.1, 12).astype(np.float32)
    neighbours = {0: [(1, 0.5), (2, 0.4)], 3: [(4, 1.0), (5, 0.2)], 4: [(5, 0.8), (6, 0.1)]}
    return NextTitleModel.from_neighbour_lists(popularity, neighbours, weights=PositionWeights(3, 0.5))


def with_sequence(table, sequence, weight):
    return NextTitleModel(table.popularity, table.neighbour_offsets, table.neighbour_codes, table.neighbour_scores,
                          weights=table.weights, sequence=sequence, sequence_weight=weight)


def test_the_blend_ranks_standardised_scores_of_unwatched_titles(table):
    sequence = SequenceModel.random(12, seed=4)
    model = with_sequence(table, sequence, 2.0)
    history = np.array([0, 3, 4])
    unwatched = np.setdiff1d(np.arange(12), history)
    t, s = table.table_scores(history), sequence.scores(history).astype(np.float64)
    expected = ((t - t[unwatched].mean()) / t[unwatched].std()
                + 2.0 * (s - s[unwatched].mean()) / s[unwatched].std())
    # The scorer returns the blend shifted and scaled per user (model/blend.py): the same once standardised.
    over = np.isin(np.arange(12), unwatched)
    assert np.allclose(standardised(model.dense_scores(history), over), standardised(expected, over))
    rows = np.stack([t, s, np.ones(12)])  # the block form training uses; a flat row is only centred
    masks = np.stack([np.isin(np.arange(12), unwatched)] * 2 + [np.zeros(12, dtype=bool)])
    z = standardised_rows(rows, masks)
    assert np.allclose(z[0] + 2.0 * z[1], expected) and not z[2].any()
    ranked = sorted(unwatched.tolist(), key=lambda c: (-expected[c], c))
    assert model.recommend(history, 5) == ranked[:5]
    assert model.recommend(history, 20) == ranked  # never a watched title, never more than there are
    assert model.recommend(history, 5, with_sequence=False) == table.recommend(history, 5)
    assert model.recommend(history, 5) != table.recommend(history, 5)  # the network changed the answer
    others = [np.array([1]), np.array([11, 10, 2]), history]
    assert model.recommend_many(others, 4) == [model.recommend(h, 4) for h in others]


def test_a_zero_weight_drops_the_network_and_payloads_keep_the_blend(table):
    assert not with_sequence(table, SequenceModel.random(12), 0.0).has_sequence
    model = with_sequence(table, SequenceModel.random(12, heads=2, seed=5), 1.5)
    again = NextTitleModel.from_payload(*model.to_payload())
    assert again.has_sequence and again.sequence_weight == 1.5 and again.sequence.heads == 2
    for history in ([0], [3, 4], [4, 0, 3, 7]):
        assert again.recommend(np.array(history), 6) == model.recommend(np.array(history), 6)
    with pytest.raises(ValueError, match="titles"):
        with_sequence(table, SequenceModel.random(11), 1.0)


def test_published_blend_loads_whole(store, table):
    model = with_sequence(table, SequenceModel.random(12, seed=6), 4.0)
    version = store.models.publish(model)
    loaded = store.models.load(version)
    assert loaded.has_sequence and loaded.sequence_weight == 4.0
    history = np.array([3, 9])
    assert np.allclose(loaded.dense_scores(history), model.dense_scores(history))


def stride_events(spark, histories):
    rows = [(f"u{u}", int(code), float(step)) for u, h in enumerate(histories) for step, code in enumerate(h)]
    return spark.createDataFrame(rows, "user_id string, code int, timestamp double")


def test_fit_tunes_the_weight_on_the_holdout_and_retrains_for_the_chosen_epochs(spark):
    titles = 23
    histories = stride_histories(500, titles, seed=2)
    options = dataclasses.replace(SMALL, dim=32, batch_size=32, max_epochs=15, patience=4, learning_rate=1e-2)
    model, report = fit_next_title(spark, stride_events(spark, histories), titles, sequence=options,
                                   base=FitParams(window=3))
    tuned = report.sequence
    weights = {w["weight"]: w["ndcg@10"] for w in tuned["weights"]}
    assert sorted(weights) == sorted(SEQUENCE_WEIGHTS)
    best = max(weights.values())
    assert report.params.sequence_weight == min(w for w, v in weights.items() if v == best)
    # On this rule the network reads what the table cannot: the blend wins on the holdout.
    assert report.params.sequence_weight > 0 and best > weights[0.0]
    assert report.params.sequence_epochs == tuned["best_epoch"]
    assert model.has_sequence and model.sequence_weight == report.params.sequence_weight
    assert model.params["sequence_weight"] == report.params.sequence_weight
    # The holdout ended tuning, and the final training continued the tuned network.
    assert tuned["stopped_by"] in ("patience", "epochs") and report.sequence_stopped_by == tuned["stopped_by"]
    assert not report.time_capped
    # ... for as many epochs as the tuning kept.
    assert tuned["final"] == {**tuned["final"], "start": "tuned", "epochs": tuned["best_epoch"],
                              "stopped_by": "epochs"}
    # 23 titles: auto trained both with the full softmax, and the report says so.
    assert (tuned["loss"], tuned["setting"], tuned["final"]["loss"]) == ("full", "auto", "full")

    # Given params: no holdout, the recorded weight; the recorded epochs from fresh weights, or
    # the recorded epochs more from a tuned network (evaluate's final fit).
    given = dataclasses.replace(report.params, sequence_weight=8.0, sequence_epochs=2)
    again, again_report = fit_next_title(spark, stride_events(spark, histories), titles, params=given,
                                         sequence=options)
    assert again.has_sequence and again.sequence_weight == 8.0
    assert again_report.sequence == {**again_report.sequence, "start": "fresh", "epochs": 2, "stopped_by": "epochs"}
    warm, warm_report = fit_next_title(spark, stride_events(spark, histories), titles, params=given,
                                       sequence=options, warm_start=report.sequence_network)
    assert warm.has_sequence and warm_report.sequence["start"] == "tuned"
    assert warm_report.sequence["epochs"] == 2 and not warm_report.time_capped
    without, _ = fit_next_title(spark, stride_events(spark, histories), titles, params=given)
    assert not without.has_sequence


def test_beyond_the_tuning_events_the_network_learns_from_the_tuning_sample(spark):
    titles = 23
    histories = stride_histories(400, titles, seed=5)
    every_event = sum(len(h) for h in histories)
    # max_length 12 holds every history whole (4-9 titles), so the last title adds one position.
    options = dataclasses.replace(SMALL, dim=32, batch_size=32, max_epochs=8, patience=4, learning_rate=1e-2,
                                  max_length=12)
    model, report = fit_next_title(spark, stride_events(spark, histories), titles, sequence=options,
                                   base=FitParams(window=3), tuning_events=every_event // 2)
    tuned, final = report.sequence, report.sequence["final"]
    sampled_users = report.holdout["users"]  # every sampled user (4+ events) holds one title out
    assert 0 < sampled_users < len(histories) and model.has_sequence
    # Each final epoch is the tuning sample again, each user with the title tuning held out: one
    # tuning epoch's positions plus one a user, not every user's (the table is built from all).
    per_epoch = final["positions"] / final["epochs"]
    assert final["epochs"] == tuned["best_epoch"] and per_epoch == tuned["positions"] // tuned["epochs"] + sampled_users
    assert per_epoch < sum(len(h) - 1 for h in histories) * 0.75
    assert report.events == every_event


def test_train_publishes_the_blend_and_a_cache_miss_serves_it(settings, store, spark, tmp_path):
    import csv

    from nextwatch.api import create_app
    from nextwatch.store.user_state import encode_state
    from nextwatch.training import train

    histories = stride_histories(300, 23, seed=4)
    path = tmp_path / "events.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "content_id", "timestamp"])
        writer.writerows((f"u{u}", f"T{code:02d}", step) for u, h in enumerate(histories) for step, code in enumerate(h))
    with_sequence = dataclasses.replace(settings, sequence_model="auto", train_minutes=2.0)

    tuned = train(with_sequence, store, spark, [str(path)], include_event_log=False)
    meta = store.models.metadata(tuned.version)
    tuning = json.loads(meta["sequence_tuning"])
    assert (tuning["loss"], tuning["setting"]) == ("full", "auto")  # the loss used is in the model's metadata
    assert meta["time_capped"] == "0" and meta["sequence_stopped_by"] == tuning["stopped_by"] != TIME_CAP
    chosen = store.models.load(tuned.version).params["sequence_weight"]
    best = max(w["ndcg@10"] for w in tuning["weights"])
    assert chosen == min(w["weight"] for w in tuning["weights"] if w["ndcg@10"] == best)

    given = FitParams(sequence_weight=4.0, sequence_epochs=2)
    version = train(with_sequence, store, spark, [str(path)], include_event_log=False, params=given).version
    model = store.models.load(version)
    assert model.has_sequence and model.sequence_weight == 4.0
    client = create_app(with_sequence, store).test_client()
    for title in ("T03", "T05", "T07"):
        watched = client.post("/watched", json={"user_id": "viewer", "content_id": title}).get_json()
    history = store.users.read("viewer").history
    codes = store.catalog.all_ids()
    # The watch is answered with the blend, and the next GET serves exactly that from cache.
    assert watched["predicted_next"] == codes[model.recommend(history, 1)[0]]
    cached = client.get("/recommend/viewer").get_json()
    assert cached["cache_hit"] is True and cached["recommendation"] == watched["predicted_next"]
    # A miss computes the blend inline: the state without its cached prediction.
    store.client.set(store.keys.user("viewer"), encode_state(history))
    got = client.get("/recommend/viewer?k=5").get_json()
    assert got["cache_hit"] is False
    assert got["recommendations"] == [codes[c] for c in model.recommend(history, 5)]


def test_a_capped_run_is_recorded_counted_and_listed(settings, store, spark, tmp_path):
    """From the cap to the metadata, the gauge model_training_time_capped and `nextwatch models list`."""
    import subprocess
    import sys

    from conftest import scrape
    from nextwatch.api import create_app
    from nextwatch.training import train

    path = tmp_path / "events.csv"
    path.write_text("user_id,content_id,timestamp\n" + "".join(
        f"u{u},T{code:02d},{step}\n" for u, h in enumerate(stride_histories(60, 23, seed=6)) for step, code in enumerate(h)))
    capped = dataclasses.replace(settings, sequence_model="auto", train_minutes=1e-6)  # reached before the network
    version = train(capped, store, spark, [str(path)], include_event_log=False).version
    meta = store.models.metadata(version)
    assert (meta["time_capped"], meta["sequence_stopped_by"]) == ("1", TIME_CAP)
    client = create_app(capped, store).test_client()
    assert scrape(client)["model_training_time_capped"] == 1.0
    listed = subprocess.run([sys.executable, "-m", "nextwatch.cli", "models", "list"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "NEXTWATCH_REDIS_URL": settings.redis_url,
                                             "NEXTWATCH_KEY_PREFIX": settings.key_prefix})
    assert listed.returncode == 0, listed.stderr
    assert re.search(r'(^| )time_capped=1( |$)', listed.stdout, re.M)
    assert re.search(r'(^| )sequence_stopped_by="time cap"( |$)', listed.stdout, re.M)
    assert "time cap reached" in listed.stdout

    uncapped = dataclasses.replace(settings, sequence_model="off")  # nothing to cap: the gauge reads 0
    train(uncapped, store, spark, [str(path)], include_event_log=False)
    assert scrape(client)["model_training_time_capped"] == 0.0


def test_the_time_box_leaves_the_table_alone_when_it_is_spent(spark):
    import time

    histories = stride_histories(200, 23, seed=5)
    spent = time.monotonic()  # a deadline already passed
    model, report = fit_next_title(spark, stride_events(spark, histories), 23, sequence=SMALL, deadline=spent)
    assert not model.has_sequence and report.params.sequence_weight == 0 and "skipped" in report.sequence
    assert report.time_capped and report.sequence_stopped_by == TIME_CAP
    given = FitParams(sequence_weight=2.0, sequence_epochs=3)
    model, report = fit_next_title(spark, stride_events(spark, histories), 23, params=given, sequence=SMALL,
                                   deadline=spent)
    assert not model.has_sequence and model.params["sequence_weight"] == 0
    assert report.time_capped and report.sequence_stopped_by == TIME_CAP
    # A tuned network to continue and the cap already reached: published as tuned, without
    # starting a final epoch that could only stop at once.
    tuned = train_sequence_model(histories, 23, SMALL, epochs=1)[0]
    model, report = fit_next_title(spark, stride_events(spark, histories), 23, params=given, sequence=SMALL,
                                   deadline=spent, warm_start=tuned)
    assert model.has_sequence and model.sequence is tuned and model.sequence_weight == 2.0
    assert report.sequence == {"start": "tuned", "epochs": 0, "stopped_by": TIME_CAP} and report.time_capped


# -- the fast blended scorer (model/blend.py) against the blend written plainly ----------------

def reference_ranking(model: NextTitleModel, history: list[int], k: int) -> list[int]:
    """z_table + λ·z_sequence over the unwatched titles (all titles when none is; a spread of
    1e-12 or less counts as 1), unwatched titles by blended score, equal scores by lower code."""
    titles = model.title_count
    watched = {c for c in history if 0 <= c < titles}
    over = [t for t in range(titles) if t not in watched] or list(range(titles))

    def z(scores):
        scores = np.asarray(scores, dtype=np.float64)
        mean = sum(scores[t] for t in over) / len(over)
        spread = np.sqrt(sum((scores[t] - mean) ** 2 for t in over) / len(over))
        return (scores - mean) / (spread if spread > 1e-12 else 1.0)

    codes = np.array(history, dtype=np.int64)
    blended = z(model.table_scores(codes)) + model.sequence_weight * z(model.sequence.scores(codes))
    return sorted((t for t in range(titles) if t not in watched), key=lambda t: (-blended[t], t))[:k]


def random_blend(rng) -> NextTitleModel:
    """A table and a sequence model of random shapes and weights. Some titles have equal
    popularity and an all-zero embedding, so that their blended scores tie exactly."""
    titles = int(rng.integers(2, 90))
    popularity = rng.random(titles).astype(np.float32)
    tied = rng.random(titles) < 0.3
    popularity[tied] = 0.5
    neighbours = {source: [(int(t), float(rng.choice([0.0, rng.random()], p=[0.1, 0.9])))
                           for t in rng.choice(titles, min(titles, int(rng.integers(1, 8))), replace=False)]
                  for source in range(titles) if rng.random() < 0.7}
    table = NextTitleModel.from_neighbour_lists(popularity, neighbours,
                                                weights=PositionWeights(int(rng.integers(1, 6)), float(rng.uniform(0.2, 1))),
                                                popularity_weight=float(rng.choice([1e-3, 0.1, 1.0])))
    heads = int(rng.choice([1, 2]))
    sequence = SequenceModel.random(titles, dim=8 * heads, blocks=int(rng.integers(1, 3)), heads=heads,
                                    max_length=int(rng.choice([4, 8, 50])), seed=int(rng.integers(1000)))
    arrays = dict(sequence.arrays)
    arrays["items"] = np.where(tied[:, None], 0.0, arrays["items"])
    for name in arrays:  # layer norms off their defaults, so that their folding counts
        if name.endswith(("_w", "_b")):
            arrays[name] = arrays[name] + rng.normal(0, 0.2, arrays[name].shape)
    return with_sequence(table, SequenceModel(arrays, heads=heads), float(rng.uniform(0.1, 20)))


def random_histories(rng, model: NextTitleModel):
    titles, longest = model.title_count, model.sequence.max_length
    everything_but_a_few = rng.permutation(titles)[: max(0, titles - int(rng.integers(1, 4)))]
    return [[], [int(rng.integers(titles))], rng.integers(0, titles + 5, 6).tolist(),  # codes newer than the model
            rng.integers(0, titles, longest + int(rng.integers(1, 30))).tolist(),  # longer than the network reads
            everything_but_a_few.tolist(), rng.permutation(titles).tolist(), [titles + 1, titles + 2]]


def test_the_fast_blend_ranks_as_the_plain_formula():
    rng = np.random.default_rng(11)
    for _ in range(60):
        model = random_blend(rng)
        for history in random_histories(rng, model):
            for k in (1, 10, model.title_count + 3):  # more than there are left, too
                expected = reference_ranking(model, history, k)
                assert model.recommend(np.array(history, dtype=np.int64), k) == expected, (history, k)
            dense = model.dense_scores(np.array(history, dtype=np.int64)).astype(np.float64)
            dense[[c for c in history if c < model.title_count]] = -np.inf
            by_dense = np.lexsort((np.arange(model.title_count), -dense))[: len(expected)].tolist()
            assert by_dense == expected  # evaluation's scores rank as recommend does


def test_the_blend_of_an_empty_history_is_the_table_and_ties_go_to_the_lower_code(table):
    model = with_sequence(table, SequenceModel.random(12, seed=8), 3.0)
    assert not model.sequence.scores(np.array([], dtype=np.int64)).any()
    popularity_order = sorted(range(12), key=lambda c: (-table.popularity[c], c))
    assert model.recommend(np.array([], dtype=np.int64), 5) == popularity_order[:5]
    flat = with_sequence(NextTitleModel.from_neighbour_lists(np.ones(12, np.float32), {}), SequenceModel.random(12), 1.0)
    assert flat.recommend(np.array([], dtype=np.int64), 4) == [0, 1, 2, 3]
    learned = flat.sequence.scores(np.array([0, 2]))  # a flat table (no spread): the network alone ranks
    assert flat.recommend(np.array([0, 2]), 3) == sorted(set(range(12)) - {0, 2}, key=lambda c: (-learned[c], c))[:3]


def test_sequence_score_moments_equal_the_scores_own():
    rng = np.random.default_rng(2)
    model = SequenceModel.random(500, dim=16, seed=3)
    for history in ([], [4, 9, 4], rng.integers(0, 500, 60).tolist()):
        state = model.state(np.array(history, dtype=np.int64))
        scores = (model.items @ state).astype(np.float64)
        excluded = np.unique(np.array(history, dtype=np.int64))
        kept = np.delete(scores, excluded)
        centre = scores.mean()
        total, squares = model.score_moments(state, excluded)
        assert total == pytest.approx((kept - centre).sum(), abs=1e-6)
        assert squares == pytest.approx(((kept - centre) ** 2).sum(), rel=1e-5, abs=1e-9)


def test_top_codes_is_a_sort_by_score_then_code():
    rng = np.random.default_rng(4)
    for size in (1, 3, 50, 5000):
        for _ in range(20):
            scores = rng.choice([rng.normal(size=size), rng.integers(0, 4, size).astype(np.float64)])
            scores[rng.random(size) < rng.choice([0.0, 0.5, 0.99])] = -np.inf  # watched titles
            allowed = int(np.isfinite(scores).sum())
            for k in {1, 10, allowed}:
                k = min(k, allowed)
                expected = sorted(range(size), key=lambda c: (-scores[c], c))[:k]
                assert top_codes(scores, k) == expected


def test_the_compiled_top_k_sorts_by_score_then_code_and_leaves_out_watched_titles():
    from nextwatch.model.kernels import top_blended

    rng = np.random.default_rng(5)
    for size in (1, 3, 50, 5000):
        for _ in range(20):
            tied = rng.integers(0, 3, size).astype(np.float32)  # many equal scores
            learned = rng.choice([rng.normal(size=size).astype(np.float32), tied])
            popular = rng.choice([np.zeros(size), 0.5 * rng.integers(0, 2, size)])
            reached = np.flatnonzero(rng.random(size) < 0.3)
            at_reached = rng.integers(-1, 2, len(reached)).astype(np.float64)
            watched = np.flatnonzero(rng.random(size) < rng.choice([0.0, 0.5, 0.99]))
            scores = learned.astype(np.float64) + popular
            scores[reached] = learned[reached] + at_reached
            left = sorted(set(range(size)) - set(watched.tolist()), key=lambda c: (-scores[c], c))
            for k in {1, 10, len(left)} - {0}:
                k = min(k, len(left))
                assert top_blended(learned, popular, reached, at_reached, watched, k).tolist() == left[:k]
