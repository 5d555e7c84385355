"""`nextwatch demo` end to end: it starts what docker-compose.yml runs, the contract works,
Ctrl-C leaves no process and no bound port behind, and a second start reuses the published
model. Also the pieces it is built from: the Prometheus config derived from deploy/prometheus,
the lines for programs that are not installed, and stopping children that ignore SIGTERM."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.local_processes import parts
from nextwatch.local_processes.monitoring import local_config
from nextwatch.local_processes.redis_server import RedisServer, free_port
from nextwatch.local_processes.supervisor import Supervisor
from nextwatch.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def process_table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, state)} from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
                table[int(entry)] = (int(parent), state)
            except (OSError, IndexError, ValueError):
                continue
    return table


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (children of children included)."""
    table = process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _state) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binding it would
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def demo_env() -> dict:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    for name in ("NEXTWATCH_REDIS_URL", "NEXTWATCH_KEY_PREFIX", "NEXTWATCH_ARCHIVE_DIR", "NEXTWATCH_SPARK_MASTER"):
        env.pop(name, None)
    return env


def start_demo(data_dir, port, redis_port, *extra: str, timeout: float = 400):
    """The demo on free ports (the compose stack's may be taken on a shared machine), started
    and read up to its last start-up line."""
    command = [sys.executable, "-m", "nextwatch.cli", "demo", "--port", str(port), "--workers", "2",
               "--redis-port", str(redis_port), "--prometheus-port", str(free_port()), "--any-free-ports",
               "--data-dir", str(data_dir), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=demo_env())
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            return process, "".join(lines)
    process.kill()
    raise AssertionError("demo did not start:\n" + "".join(lines))


def stop_demo(process, ports: list[int] = ()):
    children = descendants(process.pid)
    assert children, "the demo should have child processes (redis-server, gunicorn, ...)"
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=90)[0]
    assert process.returncode == 0, output
    assert "stopped" in output
    time.sleep(0.5)
    left = {pid: command_line(pid) for pid in children if alive(pid)}
    assert left == {}, f"processes left running: {left}"
    bound = [port for port in ports if not port_is_free(port)]
    assert bound == [], f"ports still bound after the demo stopped: {bound}"
    return output


def test_demo_runs_the_contract_and_stops_cleanly(tmp_path):
    port, redis_port = free_port(), free_port()
    process, output = start_demo(tmp_path, port, redis_port, "--report-every", "1")
    try:
        assert "training the first model" in output
        arrivals = re.search(r"added 4 new titles, out today and watched by nobody yet: (.*)", output).group(1).split(", ")
        assert f"curl http://localhost:{port}/recommend/U999" in output
        base = f"http://127.0.0.1:{port}"
        watched = requests.post(f"{base}/watched", json={"user_id": "U999", "content_id": "C1010"}, timeout=5).json()
        assert watched["user_id"] == "U999" and watched["watched"] == "C1010"
        assert watched["predicted_next"] not in (None, "C1010")
        again = requests.get(f"{base}/recommend/U999", timeout=5).json()
        assert again["recommendation"] == watched["predicted_next"] and again["cache_hit"] is True
        new_user = requests.get(f"{base}/recommend/U1234", timeout=5).json()
        assert new_user["recommendation"] == "C000"
        assert new_user["cache_hit"] is False and new_user["fallback_used"] is True
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        for name in ("cache_hits_total", "cache_misses_total", "fallbacks_used_total"):
            assert name in metrics
        # A viewer of the most popular film is shown the new film alike it, and the demo says so.
        fan = requests.post(f"{base}/watched?k=10", json={"user_id": "U998", "content_id": "C000"}, timeout=5).json()
        assert arrivals[0] in fan["recommendations"], (arrivals, fan)
        time.sleep(3)
    finally:
        if process.poll() is None:
            output = stop_demo(process)
    assert re.search(r"new titles \(out for at most a day\) were in [1-9]\d* of \d+ answers", output), output

    # Second start: same data folder, nothing regenerated or retrained before serving, the AOF
    # kept the state (the trainer trains again in the background, on its schedule).
    process, output = start_demo(tmp_path, port, redis_port)
    try:
        assert "already published" in output and "training" not in output
        assert "new titles" not in output  # one batch a day
        again = requests.get(f"http://127.0.0.1:{port}/recommend/U999", timeout=5).json()
        assert again["recommendation"] == watched["predicted_next"] and again["cache_hit"] is True
    finally:
        stop_demo(process)


# ---- the whole stack: every printed URL answers, Prometheus scrapes, Ctrl-C stops it all -----

URL_LINE = re.compile(r"^  (\S.*?\S)\s{2,}(http://127\.0\.0\.1:(\d+)\S*)", re.M)
PID_LINE = re.compile(r"^  (\S+)\s+pid (\d+)\s+(.*)$", re.M)


def prepared_data_dir(path: Path) -> Path:
    """A demo folder with a small history and a published model, so that the demo serves at once
    and its trainer's first run (in the background) is short."""
    from nextwatch.datasets.demo_dataset import DemoConfig, write_demo_dataset
    from nextwatch.store import Store

    write_demo_dataset(path / "demo", DemoConfig(titles=120, viewers=150, mean_watches=8))
    redis = RedisServer(path / "redis", persistent=True).start()
    try:
        store = Store.from_settings(Settings(redis_url=redis.url))
        publish_test_model(store, DEFAULT_NEIGHBOURS)
        store.close()
    finally:
        redis.stop()  # SIGTERM: the AOF is written out for the demo's own redis-server to load
    return path


def wait_for(description: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {description}"
        time.sleep(0.5)


def prometheus_value(base: str, expr: str) -> float | None:
    result = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_demo_runs_the_compose_processes_and_ctrl_c_stops_every_one(tmp_path):
    data_dir = prepared_data_dir(tmp_path)
    port, redis_port = free_port(), free_port()
    process, output = start_demo(data_dir, port, redis_port)
    ports = [port, redis_port]
    try:
        urls = {label: (url, int(url_port)) for label, url, url_port in URL_LINE.findall(output)}
        ports += [url_port for _url, url_port in urls.values()]
        pids = {name: (int(pid), rest) for name, pid, rest in PID_LINE.findall(output)}
        assert {"API", "page", "metrics", "Prometheus UI", "Spark master UI", "Spark worker UI"} <= set(urls), output
        assert urls["API"][1] == port
        assert {"redis-server", "api", "trainer", "archiver", "prometheus", "spark-master",
                "spark-worker"} <= set(pids)
        assert "refiner" not in pids  # watches are answered with the blend: nothing refines later

        # Every printed URL answers; the API and Prometheus through their health routes.
        for label, (url, _port) in urls.items():
            target = {"API": f"{url}/healthz", "Prometheus UI": f"{url}/-/ready"}.get(label, url)
            wait_for(f"{label} at {target}", lambda: requests.get(target, timeout=5).status_code == 200)

        # Prometheus runs deploy/prometheus's jobs and rules, pointed at the demo's processes.
        prometheus = urls["Prometheus UI"][0]
        wait_for("Prometheus to scrape the API as up", lambda: prometheus_value(
            prometheus, 'up{job="nextwatch-api"}') == 1, timeout=60)
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        scraped = {target["labels"]["job"]: target["scrapeUrl"] for target in targets}
        assert scraped["nextwatch-api"] == f"http://127.0.0.1:{port}/metrics"
        assert scraped["spark-master"] == f"{urls['Spark master UI'][0]}/metrics/master/prometheus/"
        compose_jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]}
        exporter = "redis_exporter" in urls
        assert set(scraped) == compose_jobs - ({"redis"} if not exporter else set())
        if not exporter:
            assert "job redis (redis-exporter:9121) dropped" in output
        rules = requests.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        alerts = yaml.safe_load((PROMETHEUS_YML.parent / "alerts.yml").read_text())["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} == {r["alert"] for g in alerts for r in g["rules"]}

        # The trainer (on the compose schedule, on the demo's Spark master) and the archiver run.
        trainer, archiver = pids["trainer"][0], pids["archiver"][0]
        assert alive(trainer) and alive(archiver)
        assert "train --every 15m --spark-master spark://127.0.0.1:" in command_line(trainer)
        assert f"archive --out {data_dir / 'archive'}" in command_line(archiver)
        watched = requests.post(f"http://127.0.0.1:{port}/watched", json={"user_id": "U1", "content_id": "C1010"},
                                timeout=5)
        assert watched.json()["predicted_next"] == "C1045"
        wait_for("the archiver to write the watch to Parquet",
                 lambda: any((data_dir / "archive").rglob("*.parquet")), timeout=30)
        ports.append(int(re.search(r"spark://127\.0\.0\.1:(\d+)", command_line(trainer)).group(1)))
        assert {pid for pid, _rest in pids.values()} <= descendants(process.pid)
    finally:
        if process.poll() is None:
            stop_demo(process, ports)


# ---- the pieces ------------------------------------------------------------------------------

def test_the_prometheus_config_is_the_compose_one_with_local_targets(tmp_path):
    compose = yaml.safe_load(PROMETHEUS_YML.read_text())
    addresses = {"api:5000": "127.0.0.1:5001", "localhost:9090": "127.0.0.1:9091",
                 "spark-master:8080": "127.0.0.1:8082", "spark-worker:8081": "127.0.0.1:8083"}
    config = local_config(PROMETHEUS_YML.read_text(), addresses, PROMETHEUS_YML.parent)
    assert config.dropped == {"redis": ["redis-exporter:9121"]}
    local = yaml.safe_load(config.text)

    expected_jobs = []
    for job in compose["scrape_configs"]:
        targets = [addresses.get(t) for c in job["static_configs"] for t in c["targets"]]
        if all(targets):
            expected_jobs.append({**job, "static_configs": [{"targets": targets}]})
    assert local["scrape_configs"] == expected_jobs
    assert local["global"] == compose["global"]
    assert local["rule_files"] == [str(PROMETHEUS_YML.parent / name) for name in compose["rule_files"]]
    assert set(local) == set(compose)

    path = tmp_path / "prometheus.yml"
    path.write_text(config.text)
    checked = subprocess.run(["promtool", "check", "config", str(path)], cwd="/", capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def stub_programs(folder: Path, *names: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


def test_programs_that_are_not_installed_are_skipped_with_how_to_install_them(tmp_path):
    only_spark = stub_programs(tmp_path / "bin", "spark-class")  # without Java: Spark is skipped for Java
    layout = parts.Layout(data_dir=tmp_path, archive_dir=tmp_path / "archive", demo_events=tmp_path / "e.parquet",
                          redis_url="redis://127.0.0.1:1/0", api_port=5000, ports=dict(parts.COMPOSE_PORTS),
                          deploy_dir=ROOT / "deploy", notebooks_dir=ROOT / "notebooks",
                          search_path=str(only_spark))
    found = {"prometheus": parts.prometheus(layout, tmp_path / "prometheus.yml"),
             "redis_exporter": parts.redis_exporter(layout), "grafana": parts.grafana(layout, prometheus_runs=True),
             "jupyter": parts.jupyter(layout, "local[2]"), "spark": parts.spark_cluster(layout)}
    assert all(isinstance(part, parts.Skipped) for part in found.values()), found
    assert "apt-get install prometheus" in found["prometheus"].reason
    assert "apt-get install prometheus-redis-exporter" in found["redis_exporter"].reason
    assert "make demo" in found["redis_exporter"].reason and "make demo" in found["jupyter"].reason
    # Grafana: why `make demo` cannot install it, and where to get it.
    assert "not a Debian package" in found["grafana"].reason
    assert "installation/debian" in found["grafana"].reason and "grafana.com/grafana/download" in found["grafana"].reason
    assert "install -c constraints.txt -e '.[jupyter]'" in found["jupyter"].reason
    assert "apt-get install openjdk-17-jre-headless" in found["spark"].reason


def test_the_plan_runs_the_compose_stacks_nextwatch_commands_with_the_demos_redis(tmp_path):
    from nextwatch.local_processes.demo_stack import DemoOptions, _plan

    nothing = tmp_path / "bin"  # no optional program is found: only nextwatch's own parts run
    nothing.mkdir()
    layout = parts.Layout(data_dir=tmp_path, archive_dir=tmp_path / "archive", demo_events=tmp_path / "e.parquet",
                          redis_url="redis://127.0.0.1:1/0", api_port=5000, ports=dict(parts.COMPOSE_PORTS),
                          deploy_dir=None, notebooks_dir=None, search_path=str(nothing))
    plan = _plan(layout, Settings(), DemoOptions(spark_cluster=False))
    background = {part.name: part for part in plan.background}
    assert set(background) == {"trainer", "archiver"}
    for part in [*background.values(), plan.api]:
        assert part.command[1:3] == ["-m", "nextwatch.cli"]
        assert part.env["NEXTWATCH_REDIS_URL"] == layout.redis_url
    assert background["archiver"].command[3:5] == ["archive", "--out"]


def test_the_plan_runs_jupyterlab_and_redis_exporter_when_they_are_installed(tmp_path):
    """What `make demo` installs (JupyterLab in the venv, Debian's exporter) runs, wired as in compose."""
    from nextwatch.local_processes.demo_stack import DemoOptions, _plan

    programs = stub_programs(tmp_path / "bin", "jupyter-lab", "prometheus-redis-exporter", "prometheus")
    layout = parts.Layout(data_dir=tmp_path, archive_dir=tmp_path / "archive", demo_events=tmp_path / "e.parquet",
                          redis_url="redis://127.0.0.1:1/0", api_port=5000, ports=dict(parts.COMPOSE_PORTS),
                          deploy_dir=ROOT / "deploy", notebooks_dir=ROOT / "notebooks", search_path=str(programs))
    plan = _plan(layout, Settings(), DemoOptions(spark_cluster=False))
    background = {part.name: part for part in plan.background}
    assert set(background) == {"trainer", "archiver", "redis-exporter", "prometheus", "jupyter"}

    exporter = background["redis-exporter"].command
    assert exporter[0] == str(programs / "prometheus-redis-exporter")
    assert exporter[exporter.index("-redis.addr") + 1] == layout.redis_url
    assert exporter[exporter.index("-web.listen-address") + 1] == "127.0.0.1:9121"
    jupyter = background["jupyter"]
    assert jupyter.command[0] == str(programs / "jupyter-lab")
    assert f"--notebook-dir={ROOT / 'notebooks'}" in jupyter.command and "--ip=127.0.0.1" in jupyter.command
    assert jupyter.env["NEXTWATCH_REDIS_URL"] == layout.redis_url and jupyter.env["NEXTWATCH_API_URL"] == layout.api_url
    assert any(label == "JupyterLab" and "token=" in url for label, url, _what in jupyter.urls)

    # Prometheus keeps the compose stack's redis job, pointed at the exporter.
    assert "redis" not in plan.dropped and set(plan.dropped) == {"spark-master", "spark-worker"}  # no Spark here
    config = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["redis"] == ["127.0.0.1:9121"]
    assert {part.name: part.reason for part in plan.skipped}["grafana"] == parts.GRAFANA_MISSING


def test_the_debian_redis_exporter_serves_the_demos_redis(tmp_path, redis_server):
    """The exporter `make demo` installs, started as the demo starts it: its flags are the ones
    this version takes, and it reads the demo's Redis."""
    layout = parts.Layout(data_dir=tmp_path, archive_dir=tmp_path / "archive", demo_events=tmp_path / "e.parquet",
                          redis_url=redis_server.url, api_port=5000, ports={"redis_exporter": free_port()},
                          deploy_dir=None, notebooks_dir=None)
    exporter = parts.redis_exporter(layout)
    assert isinstance(exporter, parts.Part), f"{exporter.reason} (make test installs it: scripts/system-packages.sh)"
    supervisor = Supervisor()
    try:
        supervisor.start(exporter.name, exporter.command, exporter.env, log=exporter.log, ready=exporter.ready,
                         timeout=exporter.ready_timeout)
        _label, url, _what = exporter.urls[0]
        metrics = requests.get(url, timeout=10).text
        assert re.search(r"^redis_up 1(\.0)?$", metrics, re.M), metrics[-2000:]
    finally:
        supervisor.stop_all()


IGNORES_SIGTERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# One child in the group, one in a session of its own; both inherit the ignored SIGTERM.
subprocess.Popen(["sleep", "300"])
subprocess.Popen(["sleep", "301"], start_new_session=True)
print("ready", flush=True)
time.sleep(300)
"""


def test_stopping_kills_children_that_ignore_sigterm_and_their_escaped_descendants():
    supervisor = Supervisor()
    parent = supervisor.start("stubborn", [sys.executable, "-c", IGNORES_SIGTERM])
    wait_for("both sleeps to start", lambda: len(descendants(parent.pid)) == 2, timeout=10)
    below = descendants(parent.pid)
    started = time.monotonic()
    supervisor.stop_all(timeout=1.0)
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    assert [pid for pid in {parent.pid, *below} if alive(pid)] == []


# A leader that stops its worker itself, as granian's main process does: on SIGTERM it passes
# one SIGTERM on and waits. The worker writes down every SIGTERM it gets.
STOPS_ITS_WORKER = """
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])
def stop(_signum, _frame):
    worker.send_signal(signal.SIGTERM)
    worker.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(300)
"""
COUNTS_SIGTERMS = """
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
def note(_signum, _frame):
    log.write("TERM\\n")
signal.signal(signal.SIGTERM, note)
log.write("started\\n")
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    if open(sys.argv[1]).read().count("TERM"):
        time.sleep(0.3)  # finishing what it holds: a second SIGTERM may come meanwhile
        sys.exit(0)
    time.sleep(0.01)
"""


def test_stopping_signals_the_child_which_stops_its_own_workers(tmp_path):
    """A worker gets SIGTERM once, from its own leader: signalled with the leader's whole group,
    granian's workers could stop before the main process knew, which logged their exits as
    crashes ("Unexpected exit from worker-1") and began to replace them."""
    log = tmp_path / "worker.log"
    supervisor = Supervisor()
    leader = supervisor.start("server", [sys.executable, "-c", STOPS_ITS_WORKER, str(log), COUNTS_SIGTERMS])
    wait_for("the worker to start", lambda: log.exists() and "started" in log.read_text(), timeout=10)
    worker = descendants(leader.pid)
    supervisor.stop_all(timeout=10)
    assert log.read_text().count("TERM") == 1
    assert [pid for pid in {leader.pid, *worker} if alive(pid)] == []


LEAVES_A_CHILD = """
import signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])  # left running when this exits
print("ready", flush=True)
time.sleep(300)
"""


def test_what_a_stopped_child_left_in_its_group_gets_sigterm_before_sigkill(tmp_path):
    log = tmp_path / "left.log"
    supervisor = Supervisor()
    leader = supervisor.start("wrapper", [sys.executable, "-c", LEAVES_A_CHILD, str(log), COUNTS_SIGTERMS])
    wait_for("the child to start", lambda: log.exists() and "started" in log.read_text(), timeout=10)
    left = descendants(leader.pid)
    started = time.monotonic()
    supervisor.stop_all(timeout=10)
    assert log.read_text().count("TERM") == 1  # it could finish, not only die
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    assert [pid for pid in {leader.pid, *left} if alive(pid)] == []
