"""/openapi.json is a valid OpenAPI 3 document that matches what the API really does."""

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from nextwatch.api import create_app
from nextwatch.api.inputs import GENRE_PATTERN, MAX_RULES_BODY_BYTES
from nextwatch.api.serving_routes import ROUTES as SERVING_ROUTES
from nextwatch.settings import Settings
from nextwatch.store import Store


def inline_refs(node, document):
    if isinstance(node, dict):
        if "$ref" in node:
            target = document
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return inline_refs(target, document)
        return {key: inline_refs(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [inline_refs(value, document) for value in node]
    return node


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return inline_refs(response.get_json(), response.get_json())


def test_document_is_valid_openapi(client):
    validate(client.get("/openapi.json").get_json())


def test_every_route_is_documented_and_nothing_else(client, document):
    flask_routes = set()
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            flask_routes.add((path, method.lower()))
    served = flask_routes | set(SERVING_ROUTES)
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented


def check(document, path, method, response):
    """The response's status is documented for the route, and its JSON body fits the schema."""
    documented = document["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (path, method, response.status_code)
    content = documented[str(response.status_code)].get("content", {})
    if "application/json" in content:
        OAS30Validator(content["application/json"]["schema"]).validate(response.get_json())
    for header in documented[str(response.status_code)].get("headers", {}):
        assert header in response.headers
    return response.status_code


def test_every_documented_status_is_produced(client, document, store, settings):
    produced = set()

    def record(path, method, response):
        produced.add((path, method, check(document, path, method, response)))

    record("/readyz", "get", client.get("/readyz"))  # 503: no model yet
    record("/recommend/{user_id}", "get", client.get("/recommend/U1"))  # catalog fallback, empty catalog
    from conftest import DEFAULT_NEIGHBOURS, publish_test_model

    publish_test_model(store, DEFAULT_NEIGHBOURS)
    record("/readyz", "get", client.get("/readyz"))
    record("/healthz", "get", client.get("/healthz"))
    record("/metrics", "get", client.get("/metrics"))
    record("/openapi.json", "get", client.get("/openapi.json"))
    record("/watched", "post", client.post("/watched?k=3", json={"user_id": "U1", "content_id": "C1010"}))
    record("/watched", "post", client.post("/watched", json={"user_id": 1}))
    record("/watched", "post", client.post("/watched", data="{}", content_type="text/plain"))
    record("/watched", "post", client.post("/watched", json={"pad": "x" * 70_000}))
    store.client.set(store.keys.event_id("U1", "e1"), "pending")
    record("/watched", "post", client.post("/watched", json={"user_id": "U1", "content_id": "C1", "event_id": "e1"}))
    record("/recommend/{user_id}", "get", client.get("/recommend/U1?k=5"))
    record("/recommend/{user_id}", "get", client.get("/recommend/U1?k=5&explain=true&max_maturity=18"))
    record("/recommend/{user_id}", "get", client.get("/recommend/U%201"))
    record("/impressions", "post", client.post("/impressions", json={"user_id": "U1", "content_ids": ["C1045"]}))
    record("/impressions", "post", client.post("/impressions", json={"user_id": "U1", "content_ids": []}))
    record("/impressions", "post", client.post("/impressions", data="{}", content_type="text/plain"))
    record("/impressions", "post", client.post("/impressions", json={"pad": "x" * 70_000}))
    record("/admin/rules", "get", client.get("/admin/rules"))
    record("/admin/rules", "put", client.put("/admin/rules", json={"version": 0, "blocklist": ["C9"]}))
    record("/admin/rules", "put", client.put("/admin/rules", json={"version": 0, "blocklist": ["C9"]}))  # 409
    record("/admin/rules", "put", client.put("/admin/rules", json={"version": 1, "boosts": [{"content_id": "C9",
                                                                                          "weight": 99}]}))
    record("/admin/rules", "put", client.put("/admin/rules", data="{}", content_type="text/plain"))
    # The rules may be larger than other bodies (a full blocklist), but not without limit.
    record("/admin/rules", "put", client.put("/admin/rules", json={"pad": "x" * (MAX_RULES_BODY_BYTES + 1)}))

    # The model registry, open while no API key exists.
    activate = "/admin/models/{version}/activate"
    record("/admin/models/rollback", "post", client.post("/admin/models/rollback"))  # 409: one version only
    record(activate, "post", client.post("/admin/models/99/activate"))  # 404
    record(activate, "post", client.post("/admin/models/latest/activate"))  # 400
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    record("/admin/models", "get", client.get("/admin/models"))
    record("/admin/models/rollback", "post", client.post("/admin/models/rollback"))
    record(activate, "post", client.post("/admin/models/2/activate"))

    # With API keys: 401 without one, 403 for a write key on admin routes, and with a rate of
    # one request per key (burst 1) the second request of a key answers 429.
    from nextwatch.service.access import issue_key

    admin, writer = issue_key(store, "ops", "admin"), issue_key(store, "app", "write")
    locked = create_app(settings.with_overrides(rate_limit=0.001), store).test_client()
    admin_calls = [("/admin/models", "get", "/admin/models"),
                   ("/admin/models/rollback", "post", "/admin/models/rollback"),
                   (activate, "post", "/admin/models/1/activate"),
                   ("/admin/rules", "get", "/admin/rules"),
                   ("/admin/rules", "put", "/admin/rules")]
    for path, method, url in admin_calls:
        record(path, method, locked.open(url, method=method.upper()))
        record(path, method, locked.open(url, method=method.upper(), headers={"X-API-Key": writer}))
    watch = {"user_id": "U2", "content_id": "C005"}
    record("/watched", "post", locked.post("/watched", json=watch))
    assert locked.post("/watched", json=watch, headers={"X-API-Key": writer}).status_code == 200
    record("/watched", "post", locked.post("/watched", json=watch, headers={"X-API-Key": writer}))
    shown = {"user_id": "U2", "content_ids": ["C005"]}
    record("/impressions", "post", locked.post("/impressions", json=shown))  # 401
    record("/impressions", "post", locked.post("/impressions", json=shown, headers={"X-API-Key": writer}))  # 429
    assert locked.get("/admin/models", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    for path, method, url in admin_calls:
        record(path, method, locked.open(url, method=method.upper(), headers={"Authorization": f"Bearer {admin}"}))

    # Redis unreachable: an app whose Redis is a closed port answers 503, never 500.
    unreachable = Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    down = create_app(unreachable, Store.from_settings(unreachable)).test_client()
    record("/watched", "post", down.post("/watched", json={"user_id": "U1", "content_id": "C1"}))
    record("/impressions", "post", down.post("/impressions", json={"user_id": "U1", "content_ids": ["C1"]}))
    record("/recommend/{user_id}", "get", down.get("/recommend/U1"))
    for path, method, url in admin_calls:
        record(path, method, down.open(url, method=method.upper()))

    # The catalog, the page and its counters (tests/test_catalog_api.py has the details).
    store.catalog.save_info([{"content_id": "C1010", "name": "Named", "genres": ["Drama"], "year": 2001}])
    record("/titles", "get", client.get("/titles?q=named&genre=drama&limit=5"))
    record("/titles", "get", client.get("/titles?limit=101"))
    # A query string that its parameters' own bounds allow can still make the request target too
    # long for the server (4000 characters of exclude, percent-encoded).
    too_long = "?exclude=" + "%C2%A4" * 1400
    record("/titles", "get", client.get("/titles" + too_long.replace("exclude", "q")))
    record("/recommend/{user_id}", "get", client.get("/recommend/U1" + too_long))
    record("/watched", "post", client.post("/watched" + too_long, json={"user_id": "U1", "content_id": "C1010"}))
    record("/titles/{content_id}", "get", client.get("/titles/C1010"))
    record("/titles/{content_id}", "get", client.get("/titles/C1010:nope"))
    record("/titles/{content_id}", "get", client.get("/titles/C%201"))
    record("/genres", "get", client.get("/genres"))
    record("/stats", "get", client.get("/stats"))
    record("/", "get", client.get("/"))
    record("/static/{name}", "get", client.get("/static/page.js"))
    record("/static/{name}", "get", client.get("/static/nothing.js"))
    for path, url in [("/titles", "/titles"), ("/titles/{content_id}", "/titles/C1"), ("/genres", "/genres")]:
        record(path, "get", down.get(url))

    documented = {
        (path, method, int(status))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
    }
    assert documented - produced == set()


def test_the_genre_filter_is_parsed_by_the_rule_the_schema_states(client):
    """The schema and the parser share one pattern, so a generated "valid" genre is never refused."""
    assert client.get("/openapi.json").get_json()["components"]["parameters"]["genre"]["schema"]["pattern"] \
        == GENRE_PATTERN
    assert client.get("/recommend/U1?genre=%E3%80%80").status_code == 200  # an ideographic space is text here
    assert client.get("/recommend/U1?genre=%1F").status_code == 400


# Values at the edges of each filter's rule: spaces, other whitespace, case, empty parts.
FILTER_EDGE_VALUES = {
    "exclude": ["C1045", "C1045,C1011", "C1045 , C1011", " C1045", "", ",", "\x0c", "C1045,\t", "a b",
                "C1045\n", "C\u00e9"],
    "region": ["FR", "fr", "kU", " FR", "FR ", "\tfr", "FRA", "", "\u00df", "\ufb00"],  # ß and ﬀ: 'SS', 'FF' in upper case
    "explain": ["true", "false", "1", "0", "TRUE", " true", "true\n", "yes", ""],
}


@pytest.mark.parametrize("name, value", [(name, value) for name, values in FILTER_EDGE_VALUES.items()
                                         for value in values])
def test_a_filter_value_is_accepted_exactly_when_the_document_allows_it(client, document, name, value):
    """Schemathesis checks both ways (valid values accepted, invalid ones refused), so the parser
    may neither strip what the schema refuses nor refuse what it allows."""
    schema = next(parameter["schema"] for parameter in document["paths"]["/recommend/{user_id}"]["get"]["parameters"]
                  if parameter["name"] == name)
    # A schema's pattern is an ECMAScript regex, whose $ does not match before a final newline
    # as Python's (the validator's) does.
    allowed = OAS30Validator(schema).is_valid(value) and not value.endswith("\n")
    status = client.get("/recommend/U1", query_string={name: value}).status_code
    assert status == (200 if allowed else 400), (name, value, allowed, status)
