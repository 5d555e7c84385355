"""Filters at query time, the availability window, deployment rules, explanations and new titles,
through the API against a real Redis (and a Redis Cluster): what is filtered is never shown,
``k`` titles come back whenever the catalog allows, a cached list serves a filter when it can,
a rule applies on the watch path and on a cache miss alike, bad filter values are 4xx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ON_BOTH_TOPOLOGIES, TITLES, scrape

pytestmark = ON_BOTH_TOPOLOGIES

PAST, FUTURE = 1_000_000_000.0, 4_000_000_000.0


@pytest.fixture
def catalog(store, published):
    """Metadata for some of C000..C1099: genres, maturity, regions, windows, a series."""
    info = [
        {"content_id": "C1045", "genres": ["Drama"], "maturity": 16},
        {"content_id": "C1011", "genres": ["Comedy"], "maturity": 0, "regions": ["FR"]},
        {"content_id": "C000", "genres": ["Comedy", "Drama"], "maturity": 0},
        {"content_id": "C001", "genres": ["Comedy"], "maturity": 0, "available_until": PAST},  # gone
        {"content_id": "C002", "genres": ["Comedy"], "maturity": 0, "available_from": FUTURE},  # not yet out
        {"content_id": "C003", "genres": ["Comedy"], "maturity": 0},
        {"content_id": "C1010", "series": "Sea", "season": 1, "episode": 1, "genres": ["Drama"]},
        {"content_id": "C1012", "series": "Sea", "season": 1, "episode": 2, "genres": ["Drama"]},
    ]
    store.catalog.save_info(info)
    return info


def recommend(client, user, query=""):
    answer = client.get(f"/recommend/{user}{query}")
    return answer.status_code, answer.get_json()


def test_titles_outside_their_window_are_never_recommended(client, catalog):
    client.post("/watched", json={"user_id": "U1", "content_id": "C1010"})
    status, got = recommend(client, "U1", "?k=20")
    assert status == 200 and not {"C001", "C002"} & set(got["recommendations"])
    assert len(got["recommendations"]) == 20


def test_filters_apply_before_the_top_k(client, catalog):
    client.post("/watched", json={"user_id": "U2", "content_id": "C1010"})  # predicts C1045 (Drama, 16+)
    _, plain = recommend(client, "U2", "?k=3")
    assert plain["recommendations"][0] == "C1045" and plain["cache_hit"] is True
    _, comedy = recommend(client, "U2", "?k=3&genre=comedy")
    assert comedy["recommendations"] == ["C1011", "C000", "C003"]  # comedies only, k of them
    _, kids = recommend(client, "U2", "?k=3&max_maturity=13")
    assert "C1045" not in kids["recommendations"] and len(kids["recommendations"]) == 3
    _, germany = recommend(client, "U2", "?k=3&region=de")
    assert "C1011" not in germany["recommendations"]  # FR only
    _, france = recommend(client, "U2", "?k=3&region=FR")
    assert "C1011" in france["recommendations"]
    _, none = recommend(client, "U2", "?k=3&genre=nosuchgenre")  # no title has it: nothing passes
    assert none["recommendation"] is None and none["recommendations"] == []
    _, excluded = recommend(client, "U2", "?exclude=C1045,C1011")
    assert excluded["recommendation"] not in ("C1045", "C1011")
    # POST /watched takes the same filters.
    watched = client.post("/watched?k=2&genre=comedy", json={"user_id": "U2", "content_id": "C1045"}).get_json()
    assert set(watched["recommendations"]) <= {"C1011", "C000", "C003"}


def test_a_filter_the_cached_list_satisfies_is_served_from_it(client, store, catalog):
    client.post("/watched", json={"user_id": "U3", "content_id": "C1010"})
    status, got = recommend(client, "U3", "?k=2&max_maturity=18")
    assert got["cache_hit"] is True
    _, narrow = recommend(client, "U3", "?k=5&genre=comedy")  # more comedies than the cache holds
    # ranked again with the filter inside: every comedy the catalog has available now, 3 of them
    assert narrow["cache_hit"] is False and narrow["recommendations"] == ["C1011", "C000", "C003"]


@pytest.mark.parametrize("query, error", [
    ("?genre=" + "g" * 65, "invalid_genre"),
    ("?genre=%1F", "invalid_genre"),  # a control character, which Python's str.strip() would take for a space
    ("?genre=%20%20", "invalid_genre"),
    ("?genre=comedy%0A", "invalid_genre"),  # the schema's $ ends the value; Python's would pass the \n
    ("?max_maturity=99", "invalid_max_maturity"),
    ("?max_maturity=x", "invalid_max_maturity"),
    ("?region=FRA", "invalid_region"),
    ("?exclude=a%20b", "invalid_exclude"),
    ("?explain=maybe", "invalid_explain"),
])
def test_a_bad_filter_value_is_a_4xx_that_names_it(client, catalog, query, error):
    status, got = recommend(client, "U1", query)
    assert status == 400 and got["error"] == error
    assert client.post(f"/watched{query}", json={"user_id": "U9", "content_id": "C1010"}).status_code == 400
    assert client.get("/recommend/U9").get_json()["fallback_used"] is True  # the bad watch wrote nothing


def put_rules(client, **rules):
    current = client.get("/admin/rules").get_json()
    answer = client.put("/admin/rules", json={**current, **rules})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_rules_apply_on_the_watch_path_and_on_a_miss_alike(client, store, catalog):
    put_rules(client, blocklist=["C1045"])
    watched = client.post("/watched?k=3", json={"user_id": "U4", "content_id": "C1010"}).get_json()
    assert "C1045" not in watched["recommendations"]
    _, cached = recommend(client, "U4", "?k=3")
    assert cached["cache_hit"] is True and cached["recommendations"] == watched["recommendations"]
    boosted = put_rules(client, blocklist=[], boosts=[{"content_id": "C003", "weight": 10.0}])
    assert boosted["version"] == 2
    _, after = recommend(client, "U4", "?k=3")  # the rules changed: the cache is stale
    # C003 (popularity alone) is lifted over C000 (a weak neighbour of C1010), not over the
    # strong neighbours: a boost is ten spreads of this user's scores, and C1045 stands out more.
    assert after["cache_hit"] is False and after["recommendations"] == ["C1045", "C1011", "C003"]
    stale = client.put("/admin/rules", json={**boosted, "version": 1})
    assert stale.status_code == 409 and stale.get_json()["error"] == "rules_changed"
    bad = client.put("/admin/rules", json={**boosted, "boosts": [{"content_id": "C003", "weight": 50}]})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_boosts"
    version = client.put("/admin/rules", json={**boosted, "version": {}})
    assert version.status_code == 400 and version.get_json()["error"] == "invalid_rules"


def test_a_full_blocklist_of_long_ids_fits_in_one_put(client):
    """Rules are the one body allowed past the 64 KiB limit: 10,000 ids of 120 characters."""
    blocked = [f"T{i:05d}" + "x" * 114 for i in range(10_000)]
    stored = put_rules(client, blocklist=blocked)
    assert len(stored["blocklist"]) == 10_000


def test_continue_watching_puts_the_next_episode_first_with_its_reason(client, catalog):
    put_rules(client, continue_watching=True)
    watched = client.post("/watched?k=3&explain=true", json={"user_id": "U5", "content_id": "C1010"}).get_json()
    assert watched["predicted_next"] == "C1012"
    assert watched["explanations"][0] == {"content_id": "C1012", "reason": "next_episode", "text": "next episode"}
    second = watched["explanations"][1]
    assert second["reason"] == "because_you_watched" and second["watched"] == "C1010"


def test_explanations_on_a_read(client, catalog):
    client.post("/watched", json={"user_id": "U6", "content_id": "C1010"})
    _, got = recommend(client, "U6", "?k=3&explain=true")
    reasons = got["explanations"]
    assert [r["content_id"] for r in reasons] == got["recommendations"]
    assert reasons[0]["reason"] == "because_you_watched" and reasons[0]["watched"] == "C1010"
    assert {r["reason"] for r in reasons} <= {"because_you_watched", "popular", "new", "next_episode"}
    _, newcomer = recommend(client, "N1", "?explain=true")
    assert newcomer["explanations"][0]["reason"] == "popular"


def test_a_new_title_is_not_invisible(client, store, catalog):
    """A title imported after training (unknown to the model) reaches a viewer whose recent
    titles are like it, within the top 10."""
    store.catalog.save_info([{"content_id": "NEW1", "genres": ["Horror", "Mystery"], "year": 2026,
                              "available_from": time.time() - 3600},
                             {"content_id": "C020", "genres": ["Horror", "Mystery"], "year": 2025},
                             {"content_id": "C021", "genres": ["Horror"], "year": 2026}])
    for title in ("C020", "C021"):
        watched = client.post("/watched?k=10&explain=true", json={"user_id": "U7", "content_id": title}).get_json()
    assert "NEW1" in watched["recommendations"]
    reason = next(r for r in watched["explanations"] if r["content_id"] == "NEW1")
    assert reason["reason"] == "new"
    before = scrape(client)
    _, cached = recommend(client, "U7", "?k=10")
    assert "NEW1" in cached["recommendations"]
    _, old_only = recommend(client, "U7", "?k=1")  # C020/C021-like titles, none out within a day
    assert old_only["recommendation"] != "NEW1"
    after = scrape(client)
    # Every answer that names titles is counted; only the one showing NEW1 as a new title.
    assert after["recommendation_answers_total"] - before["recommendation_answers_total"] == 2
    assert after["new_title_recommendations_total"] - before.get("new_title_recommendations_total", 0) == 1


def test_the_rules_command(settings, store, catalog):
    env = {**os.environ, "NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nextwatch.cli", "rules", *args], capture_output=True, text=True,
                              env=env, timeout=60)

    assert cli("block", "C1045", "C003").returncode == 0
    assert cli("boost", "C000", "1.5").returncode == 0
    assert cli("continue-watching", "on").returncode == 0
    shown = json.loads(cli().stdout)
    assert shown == {"version": 3, "blocklist": ["C003", "C1045"], "boosts": [{"content_id": "C000", "weight": 1.5}],
                     "continue_watching": True}
    bad = cli("boost", "C000", "99")
    assert bad.returncode == 2 and "weight" in bad.stderr
    assert TITLES[0] == "C000"


def test_a_kept_filter_mask_follows_the_clock_and_the_catalog(store):
    """The ranker keeps one mask per combination of filters (service/ranking.py): a title whose
    window closes, and metadata rewritten in place (same number of titles), change what the same
    filters allow on the next request."""
    from nextwatch.service.ranking import Ranker
    from nextwatch.service.rules import Rules
    from nextwatch.service.title_facets import Filters
    from nextwatch.service.titles import CatalogCodes

    now = [2_000_000_000.0]
    store.catalog.register(["K1", "K2", "K3"])
    store.catalog.save_info([
        {"content_id": "K1", "maturity": 0, "available_until": now[0] + 100},
        {"content_id": "K2", "maturity": 0},
        {"content_id": "K3", "maturity": 18},
    ])
    titles = CatalogCodes(store, clock=lambda: now[0])
    titles.refresh()
    ranker = Ranker(titles)
    kids = Filters(max_maturity=12)

    def allowed_ids():
        mask = ranker._allowed(Rules(), kids)
        return {titles.ids[code] for code in np.flatnonzero(mask)} & {"K1", "K2", "K3"}

    assert allowed_ids() == {"K1", "K2"}
    assert allowed_ids() == {"K1", "K2"}  # the kept mask
    now[0] += 200  # K1's window has closed
    assert allowed_ids() == {"K2"}
    store.catalog.save_info([{"content_id": "K2", "maturity": 16}])  # rewritten in place
    titles.refresh()
    assert allowed_ids() == set()
