"""The scorer on known answers: weights by recency, exclusions, popularity fill, serialisation."""

import numpy as np
import pytest

from nextwatch.model import NextTitleModel, PositionWeights


@pytest.fixture
def model():
    popularity = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    neighbours = {0: [(1, 0.5), (2, 0.5)], 3: [(4, 1.0)], 4: [(2, 0.2), (5, 0.8)]}
    return NextTitleModel.from_neighbour_lists(popularity, neighbours, weights=PositionWeights(3, 0.5),
                                               popularity_weight=0.001)


def test_scores_are_weighted_sums_by_recency(model):
    codes, scores = model.candidate_scores(np.array([0, 4]))  # 4 is the most recent
    got = dict(zip(codes.tolist(), scores.tolist()))
    assert got[5] == pytest.approx(0.8 + 0.001 * 0.5)
    assert got[2] == pytest.approx(0.2 + 0.5 * 0.5 + 0.001 * 0.8)
    assert got[1] == pytest.approx(0.5 * 0.5 + 0.001 * 0.9)


def test_only_the_window_counts(model):
    codes, _ = model.candidate_scores(np.array([3, 1, 1, 1]))  # 3 is 4 steps back, window is 3
    assert 4 not in codes.tolist()


def test_recommend_excludes_history_and_fills_with_popular(model):
    assert model.recommend(np.array([3]), 3) == [4, 0, 1]
    assert model.recommend(np.array([0, 1]), 3) == [2, 3, 4]


def test_unknown_codes_are_ignored(model):
    assert model.recommend(np.array([99]), 2) == [0, 1]


def test_dense_scores_agree_with_candidates(model):
    history = np.array([0, 3, 4])
    dense = model.dense_scores(history)
    codes, scores = model.candidate_scores(history)
    assert np.allclose(dense[codes], scores)
    others = np.setdiff1d(np.arange(6), codes)
    assert np.allclose(dense[others], 0.001 * model.popularity[others])


def test_popular_skips_excluded(model):
    assert model.popular(3, exclude=np.array([0, 2])) == [1, 3, 4]


def test_payload_round_trip(model):
    model.version = 4
    arrays, meta = model.to_payload()
    again = NextTitleModel.from_payload(arrays, meta)
    assert again.version == 4 and again.weights == model.weights
    for history in ([0], [3, 4], [4, 0, 3]):
        assert again.recommend(np.array(history), 4) == model.recommend(np.array(history), 4)


def test_scores_match_a_plain_reference_on_random_models():
    """The vectorised scorer against the formula written as plainly as possible."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        size = int(rng.integers(5, 60))
        popularity = rng.random(size).astype(np.float32)
        neighbours = {
            source: [(int(t), float(rng.random())) for t in rng.choice(size, min(size, int(rng.integers(0, 8))), replace=False)]
            for source in range(size) if rng.random() < 0.8
        }
        weights = PositionWeights(int(rng.integers(1, 6)), float(rng.uniform(0.2, 1.0)))
        model = NextTitleModel.from_neighbour_lists(popularity, neighbours, weights=weights)
        history = rng.integers(0, size + 3, rng.integers(0, 12))  # some codes unknown to the model

        expected: dict[int, float] = {}
        for position, title in enumerate(history[::-1][: weights.window]):
            for target, score in neighbours.get(int(title), []):
                expected[target] = expected.get(target, 0.0) + weights.decay ** position * score
        codes, scores = model.candidate_scores(history)
        assert sorted(expected) == codes.tolist()
        for code, score in zip(codes.tolist(), scores.tolist()):
            assert score == pytest.approx(expected[code] + 0.001 * popularity[code], rel=1e-5)

        top = model.recommend(history, 5)
        assert not set(top) & set(history.tolist())
        assert len(top) == min(5, size - len(set(history.tolist()) & set(range(size))))
