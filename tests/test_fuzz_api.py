"""Schemathesis against the served /openapi.json of a real `nextwatch serve` (granian, two
workers) on 127.0.0.1, backed by the test redis-server with two published models and a catalog.

Every documented operation is called with generated paths, query parameters, headers and
bodies, valid and invalid. Whatever is sent, the API must not answer 5xx, and every answer
must conform to the document: a documented status, the documented content type and headers, a
body that fits the schema; valid input is accepted and invalid input refused.

Two deployments are fuzzed: one with no API key configured (the API is open), and one with an
admin and a write key, where writes and admin routes answer 401 JSON without a valid key and
admin routes 403 to a write key. The schemathesis command line runs every phase (examples,
coverage, fuzzing, stateful) and every check; the Hypothesis tests below add the assertions
about keys that the built-in checks do not make.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
import sys

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.service.access import issue_key
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.settings import Settings
from nextwatch.store import Store

# Bounded so that the module takes about two minutes on two shared cores.
CLI_MAX_EXAMPLES = {"open": 100, "admin key": 40, "write key": 25, "no key": 25}
KEY_MAX_EXAMPLES = 30  # per operation and generation mode, in the Hypothesis tests
WRITE_ROUTES = {("POST", "/watched"), ("POST", "/impressions")}
ADMIN_PREFIX = "/admin/"

# Invalid input may also be refused by the server's own limits, before any parameter is read: a
# request target over 8190 bytes (414; a maxLength of 4000 characters, percent-encoded, can
# reach it), a body over 64 KiB (413) or headers over 16 KiB (431). Schemathesis' default list
# of rejections lacks them; the same list goes to its command line and to the Hypothesis tests.
SERVER_LIMIT_REFUSALS = {414: "request_line_too_long", 431: "headers_too_large"}
REJECTIONS = (schemathesis.config.ChecksConfig.from_dict({}).negative_data_rejection.expected_statuses
              + ["413", "414", "431"])
SCHEMATHESIS_CONFIG = {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}


class Deployment:
    """One `nextwatch serve` with its own key prefix in the session's redis-server."""

    def __init__(self, redis_server, prefix: str):
        self.settings = Settings(redis_url=redis_server.url, key_prefix=prefix)
        self.store = Store.from_settings(self.settings)
        self.supervisor = Supervisor()
        self.url = ""
        self.keys: dict[str, str] = {}

    def start(self, with_keys: bool) -> "Deployment":
        _delete_prefix(self.store, self.settings.key_prefix)
        publish_test_model(self.store, DEFAULT_NEIGHBOURS)
        publish_test_model(self.store, DEFAULT_NEIGHBOURS)  # two versions: rollback has somewhere to go
        self.store.catalog.save_info([{"content_id": "C1010", "name": "Title 1010", "genres": ["Drama"],
                                       "year": 1999}])
        if with_keys:
            self.keys = {"admin": issue_key(self.store, "fuzz-admin", "admin"),
                         "write": issue_key(self.store, "fuzz-write", "write")}
        port = free_port()
        env = {"NEXTWATCH_REDIS_URL": self.settings.redis_url, "NEXTWATCH_KEY_PREFIX": self.settings.key_prefix}
        self.url = f"http://127.0.0.1:{port}"
        self.supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(port), "--workers", "2"],
                              env, ready=http_ok(f"{self.url}/readyz"), timeout=60)
        return self

    def stop(self) -> None:
        self.supervisor.stop_all()
        _delete_prefix(self.store, self.settings.key_prefix)
        self.store.close()

    def schema(self):
        """The document as this server serves it, for the Hypothesis tests."""
        config = schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
        loaded = schemathesis.openapi.from_url(f"{self.url}/openapi.json", config=config)
        loaded.config.update(base_url=self.url)
        return loaded


def _delete_prefix(store: Store, prefix: str) -> None:
    for key in store.client.scan_iter(match=f"{prefix}:*", count=1000):
        store.client.unlink(key)


@pytest.fixture(scope="module")
def open_deployment(redis_server):
    deployment = Deployment(redis_server, "nwfuzzopen").start(with_keys=False)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def keyed_deployment(redis_server):
    deployment = Deployment(redis_server, "nwfuzzkeyed").start(with_keys=True)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def keyed_api(keyed_deployment):
    return keyed_deployment.schema()


def _documented_operations() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(METHOD, path) of every operation in the packaged document, and of those that take
    input that can be invalid (a body, or a parameter with a type or bounds: any text is a
    valid value of a plain string parameter): the test ids. The tests fuzz the operations as
    the running server documents them; the first test checks that it serves this document."""
    document = json.loads(importlib.resources.files("nextwatch.api").joinpath("openapi.json").read_text())
    operations, with_input = [], []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            operations.append((method.upper(), path))
            parameters = [_resolve(parameter, document) for parameter in operation.get("parameters", [])]
            if operation.get("requestBody") or any(_resolve(p["schema"], document) != {"type": "string"}
                                                   for p in parameters):
                with_input.append((method.upper(), path))
    return sorted(operations), sorted(with_input)


def _resolve(node: dict, document: dict) -> dict:
    while "$ref" in node:
        reference, node = node["$ref"], document
        for part in reference.lstrip("#/").split("/"):
            node = node[part]
    return node


OPERATIONS, OPERATIONS_WITH_INPUT = _documented_operations()
# Invalid input can only be generated for an operation that takes some.
FUZZ_CASES = ([pytest.param(method, path, GenerationMode.POSITIVE, id=f"{method} {path} valid")
               for method, path in OPERATIONS]
              + [pytest.param(method, path, GenerationMode.NEGATIVE, id=f"{method} {path} invalid")
                 for method, path in OPERATIONS_WITH_INPUT])
# The routes of the recommendation service itself; the catalog and the page are fuzzed apart
# so that a report says which side a failure is on.
SERVING_PATHS = {"/watched", "/recommend/{user_id}", "/healthz", "/readyz", "/metrics", "/openapi.json",
                 "/admin/models", "/admin/models/{version}/activate", "/admin/models/rollback"}
ROUTE_GROUPS = {"serving": sorted({path for _, path in OPERATIONS if path in SERVING_PATHS}),
                "catalog and page": sorted({path for _, path in OPERATIONS if path not in SERVING_PATHS})}
ROUTE_GROUPS = {name: paths for name, paths in ROUTE_GROUPS.items() if paths}


def test_the_served_document_is_the_packaged_one(open_deployment):
    served = requests.get(f"{open_deployment.url}/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"].startswith("application/json")
    paths = served.json()["paths"]
    assert sorted((method.upper(), path) for path, item in paths.items() for method in item) == OPERATIONS


# -- the schemathesis command line: every phase, every check ----------------------------------

def schemathesis_run(deployment: Deployment, who: str, group: str, tmp_path, *options: str) -> str:
    """`schemathesis run` against the served document, on one group of routes; fails with its
    report unless every check passed on every operation of the group. Answers the report."""
    paths = ROUTE_GROUPS[group]
    config = tmp_path / "schemathesis.toml"
    # TOML, of which a JSON list of strings is valid syntax
    config.write_text(f"[checks.negative_data_rejection]\nexpected-statuses = {json.dumps(REJECTIONS)}\n")
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{deployment.url}/openapi.json",
               "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
               "--include-path-regex", "^(" + "|".join(re.escape(path) for path in paths) + ")$",
               "--max-examples", str(CLI_MAX_EXAMPLES[who]), "--workers", "1", "--request-timeout", "10",
               "--no-color", *options]
    # Its own folder: schemathesis and Hypothesis keep caches in the working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    expected = sum(1 for _, path in OPERATIONS if path in paths)
    assert int(re.search(r"Tested: (\d+)", report).group(1)) == expected, report
    assert int(re.search(r"(\d+) generated", report).group(1)) >= expected * 5, report
    return report


@pytest.mark.parametrize("group", ROUTE_GROUPS)
def test_schemathesis_open_api(open_deployment, tmp_path, group):
    """No key configured: every route open, every answer conforms, never a 5xx."""
    schemathesis_run(open_deployment, "open", group, tmp_path)


@pytest.mark.parametrize("group", ROUTE_GROUPS)
@pytest.mark.parametrize("who", ["admin key", "write key", "no key"])
def test_schemathesis_keyed_api(keyed_deployment, tmp_path, who, group):
    """Keys configured: with an admin key, a write key (403 on admin routes) or none (401 on
    writes and admin routes), every answer is documented and conforms."""
    headers = []
    if who != "no key":
        key = keyed_deployment.keys[who.split()[0]]
        headers = ["--header", f"Authorization: Bearer {key}", "--header", f"X-API-Key: {key}"]
    schemathesis_run(keyed_deployment, who, group, tmp_path, *headers)


# -- Hypothesis, case by case: what keys must do ----------------------------------------------

def fuzz(schema, method: str, path: str, mode: GenerationMode, check) -> None:
    """Run ``check(case)`` on generated cases of one operation of the served document."""
    operation = schema[path][method]

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=KEY_MAX_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink])
    def run(case):
        check(case)

    run()


def _needs_key(case) -> str | None:
    """The role a route needs once keys are configured, or None for an open route."""
    if case.path.startswith(ADMIN_PREFIX):
        return "admin"
    if (case.method.upper(), case.path) in WRITE_ROUTES:
        return "write"
    return None


def _header(response, name: str) -> str:
    """One header of a schemathesis response (its names are lower-cased, values are lists)."""
    return response.headers.get(name.lower(), [""])[0]


@pytest.mark.parametrize("method,path,mode", FUZZ_CASES)
def test_keyed_api_without_a_valid_key(keyed_api, method, path, mode):
    """No key, or whatever key the generator made up: writes and admin routes answer 401 JSON
    with a Bearer challenge, whatever else is wrong with the request; open routes answer as
    usual. Every answer conforms."""

    def check(case):
        response = case.call_and_validate()
        if response.status_code in SERVER_LIMIT_REFUSALS:  # before routing, so before the key check
            assert response.json()["error"] == SERVER_LIMIT_REFUSALS[response.status_code], response.text
        elif _needs_key(case) is not None:
            where = (case.method, case.formatted_path, response.status_code, response.text)
            assert response.status_code == 401, where
            assert _header(response, "Content-Type").startswith("application/json"), where
            assert response.json()["error"] in ("missing_api_key", "invalid_api_key"), where
            assert _header(response, "WWW-Authenticate").startswith('Bearer realm="nextwatch"'), where
        else:
            assert response.status_code != 401, (case.method, case.formatted_path, response.text)

    fuzz(keyed_api, method, path, mode, check)


@pytest.mark.parametrize("method,path", OPERATIONS)
def test_keyed_api_with_a_write_key(keyed_api, keyed_deployment, method, path):
    """A write key: admin routes answer 403 JSON, writes pass the key check."""
    key = keyed_deployment.keys["write"]

    def check(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {key}", "X-API-Key": key})
        where = (case.method, case.formatted_path, response.status_code, response.text)
        if _needs_key(case) == "admin":
            assert response.status_code == 403 and response.json()["error"] == "forbidden", where
        else:
            assert response.status_code not in (401, 403), where

    fuzz(keyed_api, method, path, GenerationMode.POSITIVE, check)


def test_keyed_api_refuses_every_protected_route_plainly(keyed_deployment):
    """The same rules, spelled out once without a generator."""
    url, keys = keyed_deployment.url, keyed_deployment.keys
    protected = [("POST", "/watched", {"user_id": "U1", "content_id": "C1010"}),
                 ("POST", "/impressions", {"user_id": "U1", "content_ids": ["C1010"]}), ("GET", "/admin/models", None),
                 ("POST", "/admin/models/1/activate", None), ("POST", "/admin/models/rollback", None),
                 ("GET", "/admin/rules", None)]
    refusals = [({}, "missing_api_key"), ({"Authorization": "Basic Zm9vOmJhcg=="}, "missing_api_key"),
                ({"Authorization": "Bearer not-a-key"}, "invalid_api_key"),
                ({"X-API-Key": "not-a-key"}, "invalid_api_key"), ({"X-API-Key": keys["admin"][:-1]}, "invalid_api_key")]
    for method, path, body in protected:
        for headers, error in refusals:
            answer = requests.request(method, url + path, json=body, headers=headers, timeout=10)
            assert (answer.status_code, answer.json()["error"]) == (401, error), (method, path, headers)
            assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="nextwatch"')
    writer = {"X-API-Key": keys["write"]}
    for method, path, _ in protected[2:]:
        answer = requests.request(method, url + path, headers=writer, timeout=10)
        assert (answer.status_code, answer.json()["error"]) == (403, "forbidden"), (method, path)
    watched = requests.post(f"{url}/watched", json={"user_id": "U1", "content_id": "C1010"}, headers=writer, timeout=10)
    assert watched.status_code == 200 and watched.json()["predicted_next"] == "C1045"
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert requests.get(f"{url}/admin/models", headers=admin, timeout=10).status_code == 200
    for path in ("/recommend/U1", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert requests.get(url + path, timeout=10).status_code == 200, path


def test_null_event_id_is_refused_not_taken_for_none(open_deployment):
    """Found by the coverage phase: `"event_id": null` was recorded as a watch without an id,
    though the document says event_id is a string when given."""
    answer = requests.post(f"{open_deployment.url}/watched", timeout=10,
                           json={"user_id": "U-null-event", "content_id": "C1010", "event_id": None})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_event_id"
    assert open_deployment.store.users.read("U-null-event").history.size == 0  # nothing was recorded
