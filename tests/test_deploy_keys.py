"""The compose stack's API keys: the one-shot service api-keys stores the keys .env gives, the API
(which listens on 0.0.0.0 in its container) starts after it and refuses to serve while no key
exists. No Docker engine: the resolved compose file's script runs under sh with the real
`nextwatch` against the test Redis, and the API's own command runs as a real process."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys

import pytest
import yaml

from nextwatch.commands.serve import exposure_refusal
from nextwatch.settings import load_settings
from test_deploy_compose import CLUSTER_OVERRIDE, docker_compose, parse_command, resolved_config


@pytest.fixture(scope="module")
def services() -> dict:
    return resolved_config()["services"]


@pytest.fixture
def nextwatch_on_path(tmp_path) -> str:
    """A PATH whose `nextwatch` is the one under test (as the image's venv has it)."""
    shim = tmp_path / "bin" / "nextwatch"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m nextwatch.cli "$@"\n')
    shim.chmod(0o755)
    return f"{shim.parent}{os.pathsep}{os.environ['PATH']}"


def in_container(service: dict, settings, path: str, **variables: str) -> dict:
    """The service's environment as the container sees it, on the test Redis."""
    env = {**service["environment"], **variables, "PATH": path, "NEXTWATCH_REDIS_URL": settings.redis_url,
           "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_service(service: dict, env: dict) -> subprocess.CompletedProcess:
    command = [part.replace("$$", "$") for part in service["command"]]  # compose's escape, as docker runs it
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def stored(store) -> dict[str, tuple[str, str]]:
    return {record.name: (record.role, record.digest) for record in store.api_keys.records()}


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_the_api_starts_only_after_its_keys_are_stored(services):
    keys = services["api-keys"]
    assert keys["command"][:2] == ["sh", "-c"] and keys.get("restart") == "no"  # a one-shot
    assert keys["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"]["api-keys"] == {"condition": "service_completed_successfully"}
    assert keys["image"] == services["api"]["image"]  # the same nextwatch
    # Every `nextwatch` the script runs parses with the real CLI.
    script = keys["command"][2]
    commands = [line.split("then ", 1)[-1].rstrip("; ") for line in script.split(";") if "nextwatch " in line]
    assert len(commands) == 3
    for command in commands:
        words = command.split()
        assert words[0] == "nextwatch"
        assert parse_command(words[1:]).command == "keys"


def test_api_keys_stores_the_env_keys_as_hashes_and_the_api_then_serves(services, settings, store,
                                                                       nextwatch_on_path):
    admin, write = secrets.token_hex(32), secrets.token_hex(32)
    env = in_container(services["api-keys"], settings, nextwatch_on_path, API_ADMIN_KEY=admin, API_WRITE_KEY=write)
    first = run_service(services["api-keys"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert stored(store) == {"dotenv-admin": ("admin", sha256(admin)), "dotenv-write": ("write", sha256(write))}
    assert admin not in first.stdout + first.stderr and write not in first.stdout + first.stderr
    assert "dotenv-admin" in first.stdout  # `nextwatch keys list` ends its log

    again = run_service(services["api-keys"], env)  # every `docker-compose up` runs it again
    assert again.returncode == 0 and again.stdout.count("unchanged") == 2
    assert stored(store) == {"dotenv-admin": ("admin", sha256(admin)), "dotenv-write": ("write", sha256(write))}

    rotated = secrets.token_hex(32)  # .env changed: that name now holds the new key only
    changed = run_service(services["api-keys"], {**env, "API_WRITE_KEY": rotated})
    assert changed.returncode == 0 and "replacing" in changed.stdout
    assert stored(store)["dotenv-write"] == ("write", sha256(rotated))

    api_settings = api_settings_of(services["api"], settings)
    assert api_settings.host == "0.0.0.0" and api_settings.allow_open is False
    assert exposure_refusal(api_settings, store) is None  # a key exists: the API may listen


def test_without_keys_in_env_nothing_is_stored_and_the_api_refuses_to_serve(services, settings, store,
                                                                           nextwatch_on_path):
    env = in_container(services["api-keys"], settings, nextwatch_on_path)  # .env.example as shipped: no key
    assert (env["API_ADMIN_KEY"], env["API_WRITE_KEY"]) == ("", "")
    result = run_service(services["api-keys"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no API key given in .env (API_ADMIN_KEY, API_WRITE_KEY)" in result.stdout
    assert stored(store) == {}

    # The API's own command, as a real process: it refuses before it binds anything.
    api = run_service(services["api"], in_container(services["api"], settings, nextwatch_on_path))
    assert api.returncode == 2, api.stdout + api.stderr
    assert "refusing to listen on 0.0.0.0:5000 while no API key is configured" in api.stderr


def test_a_key_given_twice_in_env_stops_the_stack_before_the_api(services, settings, store, nextwatch_on_path):
    same = secrets.token_hex(32)  # one key, one name: it cannot be both admin and write
    env = in_container(services["api-keys"], settings, nextwatch_on_path, API_ADMIN_KEY=same, API_WRITE_KEY=same)
    result = run_service(services["api-keys"], env)
    assert result.returncode != 0 and "already stored under the name 'dotenv-admin'" in result.stderr
    assert same not in result.stdout + result.stderr


def test_allow_open_comes_from_env(tmp_path, settings, store):
    env_file = tmp_path / ".env"
    env_file.write_text("NEXTWATCH_ALLOW_OPEN=1\n")
    api = resolved_config(env_file)["services"]["api"]
    opened = api_settings_of(api, settings)
    assert opened.allow_open is True and exposure_refusal(opened, store) is None


def test_the_cluster_variant_stores_the_keys_in_the_cluster(services):
    result = docker_compose("-f", str(CLUSTER_OVERRIDE), "config")
    assert result.returncode == 0, result.stderr
    cluster = yaml.safe_load(result.stdout)["services"]
    url = cluster["api-keys"]["environment"]["NEXTWATCH_REDIS_URL"]
    assert url.startswith("redis+cluster://") and url == cluster["api"]["environment"]["NEXTWATCH_REDIS_URL"]
    assert cluster["api-keys"]["command"] == services["api-keys"]["command"]
    assert cluster["api"]["depends_on"]["api-keys"] == {"condition": "service_completed_successfully"}


def api_settings_of(api: dict, settings):
    """The settings `nextwatch serve` builds from the API service's command and environment."""
    args = parse_command(api["command"][1:])
    environment = {**api["environment"], "NEXTWATCH_REDIS_URL": settings.redis_url,
                   "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    return load_settings(environment, host=args.host, port=args.port, allow_open=True if args.allow_open else None)
