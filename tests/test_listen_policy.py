"""`nextwatch serve` beyond loopback: like Redis's protected mode, it refuses an address other
than loopback while no API key is configured, and while Redis cannot be reached to tell, unless
told --allow-open (NEXTWATCH_ALLOW_OPEN=1). Real `nextwatch serve` processes against the test
Redis; the ones that start are asked for /healthz through loopback and stopped."""

import sys

import pytest

from nextwatch.commands.serve import is_loopback
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.service.access import issue_key
from nextwatch.settings import SettingsError, load_settings
from test_security import cli


def unreachable_redis() -> dict:
    return {"NEXTWATCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "NEXTWATCH_REDIS_TIMEOUT": "0.2"}


def serve_until_healthy(settings, tmp_path, *flags, host="0.0.0.0", env=None) -> str:
    """Start `nextwatch serve` on a free port, wait for /healthz on 127.0.0.1, stop it; its output.
    A serve that refuses fails the test here (StartError: it exited while starting)."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    command = [sys.executable, "-m", "nextwatch.cli", "serve", "--host", host, "--port", str(port), "--workers", "1",
               *flags]
    environment = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix,
                   **(env or {})}
    supervisor = Supervisor()
    try:
        supervisor.start("api", command, environment, ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=120,
                         log=log)
    finally:
        supervisor.stop_all()
    return log.read_text()


@pytest.mark.parametrize("host,shown", [("0.0.0.0", "0.0.0.0"), ("::", "[::]"), ("192.0.2.7", "192.0.2.7")])
def test_an_outside_address_is_refused_while_no_key_is_configured(settings, redis_client, host, shown):
    port = free_port()
    refused = cli(settings, "serve", "--host", host, "--port", str(port), "--workers", "1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = refused.stderr
    assert f"refusing to listen on {shown}:{port} while no API key is configured" in message
    assert "nextwatch keys add NAME --role admin" in message
    assert "--allow-open" in message and "NEXTWATCH_ALLOW_OPEN=1" in message and "--host 127.0.0.1" in message
    assert "Traceback" not in message


def test_the_host_from_the_environment_is_held_to_the_same_rule(settings, redis_client):
    refused = cli(settings, "serve", "--port", str(free_port()), env={"NEXTWATCH_HOST": "0.0.0.0"})
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0" in refused.stderr


def test_an_outside_address_is_refused_while_redis_cannot_be_reached(settings):
    """The keys cannot be counted: an API started now could come up open once Redis answers."""
    port = free_port()
    refused = cli(settings, "serve", "--host", "0.0.0.0", "--port", str(port), env=unreachable_redis())
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = refused.stderr
    assert f"refusing to listen on 0.0.0.0:{port}: Redis cannot be reached" in message
    assert "--allow-open" in message and "--host 127.0.0.1" in message and "Traceback" not in message


@pytest.mark.parametrize("told", ["--allow-open", "NEXTWATCH_ALLOW_OPEN=1"])
def test_an_outside_address_is_served_open_when_told(settings, redis_client, tmp_path, told):
    flags, env = (["--allow-open"], {}) if told == "--allow-open" else ([], {"NEXTWATCH_ALLOW_OPEN": "1"})
    output = serve_until_healthy(settings, tmp_path, *flags, env=env)
    assert "No API keys are configured (writes are open)" in output


def test_an_outside_address_is_served_once_a_key_exists(settings, store, tmp_path):
    issue_key(store, "ops", "admin")
    output = serve_until_healthy(settings, tmp_path)
    assert "API keys: 1 configured (0 write, 1 admin)" in output


def test_loopback_is_served_without_keys_and_without_redis(settings, tmp_path):
    output = serve_until_healthy(settings, tmp_path, host="127.0.0.1", env=unreachable_redis())
    assert "API keys: cannot be read yet" in output


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LocalHost.", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("::ffff:10.1.2.3", False),
    ("localhost.example.com", False), ("example.com", False)])
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_allow_open_setting_is_a_flag_that_names_its_variable():
    assert load_settings({}).allow_open is False
    for raw, value in (("1", True), ("true", True), ("yes", True), ("0", False), ("off", False), ("False", False)):
        assert load_settings({"NEXTWATCH_ALLOW_OPEN": raw}).allow_open is value
    assert load_settings(load_settings({"NEXTWATCH_ALLOW_OPEN": "1"}).environment()).allow_open is True
    with pytest.raises(SettingsError, match="NEXTWATCH_ALLOW_OPEN must be 1 or 0"):
        load_settings({"NEXTWATCH_ALLOW_OPEN": "maybe"})
