"""Properties, checked on generated input: client ids (ids.py), query strings (api/inputs.py)
and the next-title scorer (model/next_title.py) against plain-Python statements of their rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from urllib.parse import parse_qs

from nextwatch.api.inputs import query_values
from nextwatch.errors import InvalidInput
from nextwatch.ids import MAX_ID_LENGTH, validate_id
from nextwatch.keys import Keys
from nextwatch.model import NextTitleModel, PositionWeights

# Applied to each test rather than loaded as a profile, which would change every module's.
thorough = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- ids ------------------------------------------------------------------------------------

ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
# Characters that look harmless but must be refused: key syntax, whitespace, look-alike
# letters and digits outside ASCII, and what a regex's '$' would let through.
TRICKY = "{}[]*?\\/ \t\n\r\x00%+,;'\"`~!@#$^&()=|<>ſKİı٣０𝟘é-"
FIELDS = ("user_id", "content_id", "event_id")

valid_ids = st.text(alphabet=sorted(ALLOWED), min_size=1, max_size=MAX_ID_LENGTH)
near_valid_text = st.text(alphabet=st.sampled_from(sorted(ALLOWED)) | st.sampled_from(TRICKY) | st.characters(),
                          min_size=0, max_size=MAX_ID_LENGTH + 3)
not_strings = st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=8) | \
    st.lists(st.text(max_size=3), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def expected_rule(value: object) -> str | None:
    """The rule ``value`` breaks, in the words of the error detail, or None if it is an id."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) == 0:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if any(character not in ALLOWED for character in value):
        return "may only contain characters from [A-Za-z0-9_.:-]"
    return None


def hash_tag(key: str) -> str | None:
    """What Redis Cluster hashes a key by: the text between the first '{' and the first '}'
    after it, when that is not empty; else (None) the whole key."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


@thorough
@given(user_id=valid_ids, event_id=valid_ids, prefix=st.text(alphabet=sorted(ALLOWED - {":"}), min_size=1, max_size=8))
@example(user_id="a" * MAX_ID_LENGTH, event_id="e:1", prefix="nw")
@example(user_id=":", event_id=":", prefix="nw")
def test_every_accepted_id_stays_inside_its_hash_tag_and_round_trips(user_id, event_id, prefix):
    assert validate_id(user_id, "user_id") == user_id
    assert validate_id(event_id, "event_id") == event_id
    keys = Keys(prefix, shards=16)
    shard_tag = keys.shard_tag(keys.shard_of(user_id))
    user_keys = [keys.user(user_id), keys.event_id(user_id, event_id)]
    for key in user_keys + [keys.user_event_log(user_id)]:
        assert hash_tag(key) == shard_tag, key  # the user's shard's slot, whatever the id holds
    # The ids come back out of the keys unchanged.
    assert keys.user(user_id).split("}:u:", 1)[1] == user_id
    assert keys.event_id(user_id, event_id).split("}:e:", 1)[1].split("|") == [user_id, event_id]


@thorough
@given(first=valid_ids, second=valid_ids, first_event=valid_ids, second_event=valid_ids)
def test_distinct_ids_never_share_a_key(first, second, first_event, second_event):
    assume((first, first_event) != (second, second_event))
    keys = Keys("nw", shards=16)
    names = {keys.user(first), keys.event_id(first, first_event)}
    others = {keys.user(second), keys.event_id(second, second_event)}
    if first != second:
        assert not names & others
    else:  # same user, other event: only the event-id key differs
        assert keys.event_id(first, first_event) != keys.event_id(second, second_event)


@thorough
@given(value=near_valid_text | not_strings, field=st.sampled_from(FIELDS))
@example(value="a" * MAX_ID_LENGTH, field="user_id")
@example(value="a" * (MAX_ID_LENGTH + 1), field="user_id")
@example(value="abc\n", field="content_id")
@example(value="", field="event_id")
@example(value="{u:x}", field="user_id")
@example(value="٣", field="user_id")
@example(value=7, field="content_id")
@example(value=None, field="event_id")
def test_only_the_allowed_characters_and_lengths_are_accepted(value, field):
    rule = expected_rule(value)
    if rule is None:
        assert validate_id(value, field) == value
        return
    with pytest.raises(InvalidInput) as refused:
        validate_id(value, field)
    error = refused.value
    assert error.status == 400
    assert error.error == f"invalid_{field}"
    assert error.detail.startswith(f"{field} {rule}"), error.detail
    assert error.to_json() == {"error": f"invalid_{field}", "detail": error.detail}


# -- query strings ----------------------------------------------------------------------------

# What a query string can hold: separators, escapes (well-formed or not), '+', letters, digits,
# and text outside ASCII as a server may hand it over.
QUERY_PIECES = st.sampled_from(["&", "=", "%", "+", "%2B", "%26", "%3D", "%C3%A9", "%zz", "%4", "k", "max_maturity",
                                "genre", "3", "18", "a b", "é", ";", "ÿ"]) | st.text(max_size=3)


@thorough
@given(st.lists(QUERY_PIECES, max_size=12).map("".join))
@example("k=3&max_maturity=18")
@example("k=1&k=2&&=&genre&genre=Drama+%26+Crime")
def test_query_values_decode_as_parse_qs_keeping_the_last_value(query):
    expected = {name: found[-1] for name, found in parse_qs(query, keep_blank_values=True).items()}
    assert query_values(query) == expected


# -- the scorer ------------------------------------------------------------------------------

@st.composite
def models(draw, exact: bool):
    """A small random model and a history. With ``exact``, every score, popularity and weight
    is a small multiple of a power of two, so that sums are exact in any order and in float32:
    ties are common and a reference in Python floats must agree to the last bit."""
    titles = draw(st.integers(1, 12))
    if exact:
        value = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5])  # few values: equal scores are common
        decay = draw(st.sampled_from([1.0, 0.5, 0.25]))
        popularity_weight = draw(st.sampled_from([2.0 ** -10, 2.0 ** -4, 1.0]))
    else:
        value = st.floats(0, 10, width=32)
        decay = draw(st.floats(0.05, 1.0))
        popularity_weight = draw(st.floats(1e-6, 1.0))
    popularity = draw(st.lists(value, min_size=titles, max_size=titles) | value.map(lambda v: [v] * titles))
    rows = draw(st.dictionaries(st.integers(0, titles - 1),
                                st.lists(st.tuples(st.integers(0, titles - 1), value), min_size=1, max_size=6),
                                min_size=min(titles, 2), max_size=titles))
    window = draw(st.integers(1, 6))
    # Codes at and above ``titles`` are titles newer than the model, as serving meets them.
    history = draw(st.lists(st.integers(0, titles + 2), min_size=1, max_size=10))
    k = draw(st.integers(1, titles + 3))
    model = NextTitleModel.from_neighbour_lists(np.array(popularity, dtype=np.float32), rows,
                                                weights=PositionWeights(window, decay),
                                                popularity_weight=popularity_weight)
    return model, rows, history, k


def reference_scores(model: NextTitleModel, rows: dict, history: list[int]) -> dict[int, float]:
    """score(t) = sum over the last ``window`` titles h_i, most recent first, of decay**i times
    each of h_i's neighbour scores for t, plus popularity_weight * popularity[t]; only titles
    that some recent title leads to. Titles newer than the model take their place in the
    window but lead nowhere."""
    weights = model.weights
    sums: dict[int, float] = {}
    for position, code in enumerate(list(reversed(history))[: weights.window]):
        if code >= model.title_count:
            continue
        for target, score in rows.get(code, []):
            weight = float(np.float32(weights.decay ** position))
            sums[target] = sums.get(target, 0.0) + weight * float(np.float32(score))
    return {t: s + model.popularity_weight * float(model.popularity[t]) for t, s in sums.items()}


def reference_recommend(model: NextTitleModel, rows: dict, history: list[int], k: int) -> list[int]:
    """Unwatched titles the history leads to, best score first (equal scores: the lower code,
    which in a fresh catalog is the more popular title); then the most popular of the other
    unwatched titles (equal popularity: the lower code)."""
    watched = set(history)
    scores = reference_scores(model, rows, history)
    ranked = sorted((t for t in scores if t not in watched), key=lambda t: (-float(np.float32(scores[t])), t))
    chosen = ranked[:k]
    others = sorted((t for t in range(model.title_count) if t not in watched and t not in chosen),
                    key=lambda t: (-float(model.popularity[t]), t))
    return chosen + others[: k - len(chosen)]


@thorough
@given(case=models(exact=True))
def test_recommendations_agree_with_the_reference(case):
    model, rows, history, k = case
    assert model.recommend(np.array(history, dtype=np.int64), k) == reference_recommend(model, rows, history, k)


@thorough
@given(case=models(exact=False))
def test_candidate_scores_agree_with_the_reference(case):
    model, rows, history, _ = case
    codes, scores = model.candidate_scores(np.array(history, dtype=np.int64))
    expected = reference_scores(model, rows, history)
    assert codes.tolist() == sorted(expected)  # codes ascending, each once
    assert scores.tolist() == pytest.approx([expected[c] for c in codes.tolist()], rel=1e-5, abs=1e-6)


@thorough
@given(case=models(exact=False))
def test_recommendations_exclude_the_watched_are_unique_and_as_many_as_possible(case):
    model, _, history, k = case
    chosen = model.recommend(np.array(history, dtype=np.int64), k)
    watched = set(history)
    available = model.title_count - len({c for c in watched if c < model.title_count})
    assert not watched & set(chosen)
    assert len(chosen) == len(set(chosen)) == min(k, available)
    assert all(0 <= c < model.title_count for c in chosen)


@thorough
@given(case=models(exact=True) | models(exact=False))
def test_recommendations_are_ranked_by_score_then_by_popularity(case):
    """The titles the history leads to come first, by score, equal scores by lower code; the
    popular titles that fill the list follow by popularity, equal popularity by lower code."""
    model, _, history, k = case
    chosen = model.recommend(np.array(history, dtype=np.int64), k)
    codes, scores = model.candidate_scores(np.array(history, dtype=np.int64))
    score_of = {c: s for c, s in zip(codes.tolist(), scores.tolist()) if c not in set(history)}
    led_to = [c for c in chosen if c in score_of]
    filled = chosen[len(led_to):]
    assert chosen[: len(led_to)] == led_to  # no popular title before a title the history leads to
    assert not set(filled) & set(score_of)
    assert [(-score_of[c], c) for c in led_to] == sorted((-score_of[c], c) for c in led_to)
    if filled:  # the list was filled only because the history led to too few titles
        assert len(led_to) == len(score_of)
    pop = model.popularity.tolist()
    assert [(-pop[c], c) for c in filled] == sorted((-pop[c], c) for c in filled)


@thorough
@given(case=models(exact=True))
def test_of_equal_neighbour_scores_the_more_popular_title_comes_first(case):
    """The documented tie rule: the popularity term decides between titles whose neighbour
    scores are equal."""
    model, rows, history, k = case
    chosen = model.recommend(np.array(history, dtype=np.int64), model.title_count)
    scores = reference_scores(model, rows, history)
    neighbour_part = {t: s - model.popularity_weight * float(model.popularity[t]) for t, s in scores.items()}
    position = {c: i for i, c in enumerate(chosen)}
    for a in position:
        for b in position:
            if a in neighbour_part and b in neighbour_part and neighbour_part[a] == neighbour_part[b] \
                    and model.popularity[a] > model.popularity[b]:
                assert position[a] < position[b], (a, b, chosen)


@thorough
@given(case=models(exact=False))
def test_scoring_is_deterministic_and_survives_serialisation(case):
    model, _, history, k = case
    history = np.array(history, dtype=np.int64)
    first = model.recommend(history, k)
    assert model.recommend(history.copy(), k) == first
    arrays, meta = model.to_payload()
    assert NextTitleModel.from_payload(arrays, meta).recommend(history, k) == first
    # The history is not changed by scoring it.
    assert model.recommend(history, k) == first
