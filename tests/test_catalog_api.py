"""The catalog API (GET /titles, /titles/<id>, /genres), the counters (GET /stats) and the
page's files, on a real Redis: paging, filters, bounds, errors, schemas, Redis round trips."""

import json

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from conftest import scrape
from test_openapi import check, inline_refs
from nextwatch.api import create_app
from nextwatch.service.catalog import CatalogService, TitleQuery
from nextwatch.datasets.demo_dataset import DemoConfig, generate_catalog
from nextwatch.settings import Settings
from nextwatch.store import Store


@pytest.fixture
def catalog(store):
    """60 demo titles C000..C059 with names, genres and years, stored as the demo stores them."""
    titles = generate_catalog(DemoConfig(titles=60))
    store.catalog.save_info(titles)
    return titles


@pytest.fixture
def document(client):
    body = client.get("/openapi.json").get_json()
    return inline_refs(body, body)


def titles(client, query="", status=200):
    answer = client.get(f"/titles{query}")
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


def shown(title: dict) -> dict:
    return {"content_id": title["content_id"], "name": title["name"], "genres": title["genres"], "year": title["year"]}


def test_pages_walk_the_whole_catalog_in_catalog_order(client, catalog):
    seen = []
    for page in (1, 2, 3):
        body = titles(client, f"?page={page}&limit=25")
        assert (body["page"], body["limit"], body["total"], body["pages"]) == (page, 25, 60, 3)
        seen += body["items"]
    assert seen == [shown(t) for t in catalog]
    assert titles(client, "?page=4&limit=25")["items"] == []  # past the end: empty, not an error
    default = titles(client)
    assert default["limit"] == 24 and [t["content_id"] for t in default["items"]] == [f"C{i:03d}" for i in range(24)]


def test_filters_by_name_genre_and_ids(client, catalog):
    word = catalog[7]["name"].split()[-1]
    body = titles(client, f"?q={word.upper()}&limit=100")
    expected = [shown(t) for t in catalog if word.casefold() in t["name"].casefold()]
    assert body["items"] == expected and body["total"] == len(expected) >= 1

    genre = catalog[0]["genres"][0]
    body = titles(client, f"?genre={genre.lower()}&limit=100")
    assert body["items"] == [shown(t) for t in catalog if genre in t["genres"]]

    both = titles(client, f"?genre={genre}&q={word}&limit=100")["items"]
    assert both == [t for t in expected if genre in t["genres"]]

    assert [t["content_id"] for t in titles(client, "?q=c05&limit=100")["items"]] == [f"C05{i}" for i in range(10)]
    assert titles(client, "?q=%20%20&genre=")["total"] == 60  # blank filters filter nothing

    body = titles(client, "?ids=C010,C002,nothing,C010,no%20id,%20C003")
    assert [t["content_id"] for t in body["items"]] == ["C010", "C002", "C003"] and body["total"] == 3
    assert titles(client, "?ids=" + ",".join(f"C{i:03d}" for i in range(100)) + "&limit=100")["total"] == 60
    assert titles(client, "?ids=")["total"] == 0


def test_titles_without_metadata_show_their_id_only(client, store, catalog, published):
    client.post("/watched", json={"user_id": "U1", "content_id": "brand-new"})
    store.client.hset(store.keys.title_info, "C003", "not json")
    store.client.hset(store.keys.title_info, "C004", json.dumps({"content_id": "C004", "name": 7, "genres": "x",
                                                                   "year": "1999"}))
    everything = titles(client, "?limit=100&page=12")  # 1100 test titles + brand-new
    assert everything["items"][-1] == {"content_id": "brand-new", "name": None, "genres": [], "year": None}
    assert client.get("/titles/brand-new").get_json()["name"] is None
    for broken in ("C003", "C004"):
        assert client.get(f"/titles/{broken}").get_json() == {"content_id": broken, "name": None, "genres": [],
                                                                "year": None}


def test_one_title(client, catalog):
    assert client.get("/titles/C042").get_json() == shown(catalog[42])
    unknown = client.get("/titles/C999")
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "unknown_title"
    for bad in ("C%2042", "x" * 129, "%C3%A9", "a%7Bb%7D"):
        answer = client.get(f"/titles/{bad}")
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_content_id", bad


@pytest.mark.parametrize("query, error", [
    ("?limit=0", "invalid_limit"), ("?limit=101", "invalid_limit"), ("?limit=ten", "invalid_limit"),
    ("?limit=", "invalid_limit"), ("?limit=-1", "invalid_limit"), ("?limit=1.5", "invalid_limit"),
    ("?page=0", "invalid_page"), ("?page=1000001", "invalid_page"), ("?page=%C2%B2", "invalid_page"),
    ("?page=" + "9" * 5000, "invalid_page"), ("?q=" + "a" * 101, "invalid_q"), ("?q=" + "a" * 100 + "%20", "invalid_q"), ("?genre=" + "g" * 65, "invalid_genre"),
    ("?ids=" + ",".join(f"C{i}" for i in range(101)), "invalid_ids"), ("?ids=" + "," * 100, "invalid_ids"),
])
def test_bad_parameters_are_refused_with_the_rule(client, catalog, query, error):
    body = titles(client, query, status=400)
    assert body["error"] == error and body["detail"]


def test_limits_are_inclusive(client, catalog):
    assert len(titles(client, "?limit=100")["items"]) == 60
    assert titles(client, "?limit=1&page=60")["items"][0]["content_id"] == "C059"
    assert titles(client, "?page=1000000")["items"] == []


def test_genres_count_titles_most_common_first(client, catalog):
    genres = client.get("/genres").get_json()["genres"]
    counts = {}
    for title in catalog:
        for genre in title["genres"]:
            counts[genre] = counts.get(genre, 0) + 1
    assert {g["name"]: g["titles"] for g in genres} == counts
    assert [g["titles"] for g in genres] == sorted(counts.values(), reverse=True)


def test_the_snapshot_follows_the_catalog(store, catalog):
    now = [0.0]
    service = CatalogService(store, refresh_seconds=30, clock=lambda: now[0])
    assert service.titles(TitleQuery(limit=100))["total"] == 60
    store.catalog.register(["late-1", "late-2"])  # appended: read alone
    store.catalog.save_info([{"content_id": "late-2", "name": "Late Arrival", "genres": ["Noir"]}])
    body = service.titles(TitleQuery(text="late", limit=100))
    assert [t["name"] for t in body["items"]] == [None, "Late Arrival"]
    assert service.genres()["genres"][-1] == {"name": "Noir", "titles": 1}

    store.catalog.save_info([{"content_id": "C000", "name": "Renamed"}])  # in place: no length changes
    assert service.titles(TitleQuery(limit=1))["items"][0]["name"] == catalog[0]["name"]
    now[0] = 31.0
    assert service.titles(TitleQuery(limit=1))["items"][0]["name"] == "Renamed"

    store.client.delete(store.keys.title_ids, store.keys.title_codes, store.keys.title_info)
    assert service.titles(TitleQuery())["total"] == 0


def command_calls(redis_client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in redis_client.info("commandstats").items()}


def calls_during(redis_client, action) -> dict[str, int]:
    redis_client.config_resetstat()
    action()
    return {name: n for name, n in command_calls(redis_client).items()
            if name not in ("info", "config|resetstat", "config")}  # the measuring itself


def test_pages_of_a_large_catalog_cost_a_few_round_trips(client, store, redis_client):
    """20,000 titles: the first filtered page reads the catalog in batches (HSCAN, never one
    HGETALL of everything), later pages ask Redis only whether it changed, a few titles added
    since are read alone, many are read in batches again."""
    store.catalog.save_info([{"content_id": f"T{i:05d}", "name": f"Title {i}", "genres": ["Drama" if i % 3 else "Comedy"]}
                             for i in range(20_000)])
    first = calls_during(redis_client, lambda: titles(client, "?q=title%201999&genre=comedy"))
    assert set(first) == {"hlen", "hscan"} and first["hscan"] <= 30, first
    later = calls_during(redis_client, lambda: titles(client, "?q=title%2019&page=3"))
    assert later == {"hlen": 2}
    store.catalog.register(["T20000", "T20001"])
    grown = calls_during(redis_client, lambda: titles(client, "?ids=T20001,T00007"))
    assert grown == {"hlen": 2, "hmget": 2}
    store.catalog.register([f"X{i}" for i in range(2_500)])  # an import: read in batches again
    imported = calls_during(redis_client, lambda: titles(client, "?q=x2499"))
    assert set(imported) == {"hlen", "hscan"}
    assert calls_during(redis_client, lambda: client.get("/titles/T00042")) == {"hexists": 1, "hget": 1}


def test_stats_are_the_metrics_counters(client, published):
    before, metrics_before = client.get("/stats").get_json(), scrape(client)
    client.post("/watched", json={"user_id": "S1", "content_id": "C1010"})
    client.get("/recommend/S1")  # cached by the watch: a hit
    client.get("/recommend/S-new")  # no history: a miss, answered by the popular fallback
    after, metrics_after = client.get("/stats").get_json(), scrape(client)
    assert after["cache_hits"] - before["cache_hits"] == 1
    assert after["cache_misses"] - before["cache_misses"] == 1
    assert after["fallbacks_used"] - before["fallbacks_used"] == 1
    assert after["fallbacks_by_step"]["popular"] - before["fallbacks_by_step"].get("popular", 0) == 1
    assert after["watch_events"] - before["watch_events"] == 1
    assert after["cache_hits"] == metrics_after["cache_hits_total"]
    assert after["cache_misses"] == metrics_after["cache_misses_total"]
    assert after["hit_rate"] == pytest.approx(after["cache_hits"] / (after["cache_hits"] + after["cache_misses"]))
    assert metrics_after["cache_hits_total"] - metrics_before["cache_hits_total"] == 1


def test_without_redis_the_catalog_answers_503_and_the_counters_still_answer():
    unreachable = Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    down = create_app(unreachable, Store.from_settings(unreachable)).test_client()
    for url in ("/titles", "/titles/C1", "/genres"):
        answer = down.get(url)
        assert answer.status_code == 503 and answer.get_json()["error"] == "store_unavailable"
        assert answer.headers["Retry-After"]
    assert down.get("/stats").status_code == 200


def test_the_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    for name, mimetype in [("page.js", "text/javascript"), ("page.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
        assert f"/static/{name}" in html
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and answer.mimetype == mimetype and answer.data
    for missing in ("nothing.js", "..", "page.js.map", "%2e%2e%2fopenapi.json"):
        answer = client.get(f"/static/{missing}")
        assert answer.status_code == 404 and answer.get_json()["error"] == "not_found"


def test_answers_fit_the_documented_schemas(client, document, catalog, published):
    client.post("/watched", json={"user_id": "U1", "content_id": "unnamed-title"})
    requests = [
        ("/titles", "?limit=100&page=11"), ("/titles", "?ids=C001,unnamed-title"), ("/titles", "?limit=0"),
        ("/titles", "?q=zzzz"), ("/titles/{content_id}", "C001"), ("/titles/{content_id}", "unnamed-title"),
        ("/titles/{content_id}", "nope"), ("/titles/{content_id}", "no%20pe"), ("/genres", ""), ("/stats", ""),
    ]
    for path, rest in requests:
        url = path.replace("{content_id}", rest) if "{" in path else path + rest
        check(document, path, "get", client.get(url))


# Any text in any parameter: a documented status and body, never a 5xx.
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=140)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.one_of(st.none(), _text, st.integers(-5, 10**7).map(str)),
       limit=st.one_of(st.none(), _text, st.integers(-5, 200).map(str)),
       q=st.one_of(st.none(), _text), genre=st.one_of(st.none(), _text), ids=st.one_of(st.none(), _text),
       content_id=_text.filter(lambda s: s and "/" not in s))
def test_no_input_gives_a_server_error(client, document, catalog, page, limit, q, genre, ids, content_id):
    query = {name: value for name, value in
             {"page": page, "limit": limit, "q": q, "genre": genre, "ids": ids}.items() if value is not None}
    check(document, "/titles", "get", client.get("/titles", query_string=query))
    check(document, "/titles/{content_id}", "get", client.get(f"/titles/{content_id}"))
