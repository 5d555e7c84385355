"""deploy/prometheus and deploy/grafana, checked with promtool and against a real Prometheus.

The real-Prometheus test runs the API under gunicorn (against a private Redis that it can stop
and start again), a Spark standalone master and worker reading deploy/spark/metrics.properties,
and Debian's `prometheus` scraping them with a copy of deploy/prometheus/prometheus.yml. After
real traffic, every PromQL expression of the dashboard and of the alerts goes through
Prometheus's HTTP API: each must parse, and each dashboard query must return data, except the
Redis panels (no redis_exporter runs here). The traffic includes impressions, a running
experiment with two arms and a title out for less than a day, so that the impression,
experiment and new-title panels have something to show.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import DEFAULT_NEIGHBOURS, parse_metrics, publish_test_model
from nextwatch.local_processes.redis_server import RedisServer, free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok
from nextwatch.service.experiments import Experiment, Experiments
from nextwatch.settings import Settings
from nextwatch.store import Store

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "nextwatch.json"
DATASOURCE_UID = "prometheus"

# The only dashboard panels allowed to come back empty: they read redis_exporter, which the
# compose stack runs but this test does not (it is a separate Go binary, not a Debian package
# the tests install). Their queries must still parse.
PANELS_WITHOUT_DATA_HERE = {"Redis memory used", "Redis commands per second"}
# Grafana picks $__rate_interval from the scrape interval; here one window covers the whole test.
RATE_WINDOW = "1m"
# $__range is the dashboard's time range (instant queries of table panels); longer than the test.
DASHBOARD_RANGE = "10m"
EXPERIMENT = "dash-arms"
NEW_TITLE = "C1045"  # what every cache hit of the traffic recommends: out for an hour here


def tool(name: str, package: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.fail(f"{name} is not installed: apt-get install {package}")
    return binary


def run_promtool(*args: str) -> None:
    result = subprocess.run([tool("promtool", "prometheus"), *args], cwd=PROMETHEUS_DIR, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    """[(panel title, PromQL)] of every target of every panel, rows included."""
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in panels(dashboard["panels"])
            for target in panel.get("targets", [])]


def as_prometheus_runs_it(expr: str, window: str = RATE_WINDOW) -> str:
    """A dashboard expression with Grafana's variables replaced as Grafana would."""
    return expr.replace("$__rate_interval", window).replace("$__range", DASHBOARD_RANGE)


def wilson_interval(hits: float, watches: float, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of hits / watches, written from its textbook form."""
    p = hits / watches
    centre = (p + z * z / (2 * watches)) / (1 + z * z / watches)
    half = z / (1 + z * z / watches) * math.sqrt(p * (1 - p) / watches + z * z / (4 * watches * watches))
    return max(0.0, centre - half), min(1.0, centre + half)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# ---- promtool ---------------------------------------------------------------------------------

def test_promtool_checks_the_config_and_its_rule_files():
    # Run from another folder: rule_files must resolve relative to prometheus.yml itself.
    result = subprocess.run([tool("promtool", "prometheus"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
                            cwd="/", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_checks_the_rules():
    run_promtool("check", "rules", "alerts.yml")


def test_promtool_unit_tests_fire_and_clear_every_alert():
    run_promtool("test", "rules", "alerts.test.yml")
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"no test fires {rule['alert']}"
        assert any(not case["exp_alerts"] for case in mine), f"no test keeps {rule['alert']} quiet"


def test_every_alert_has_a_duration_a_severity_and_annotations():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "NextwatchApiDown", "NextwatchHighErrorRatio", "NextwatchHighLatencyP99", "NextwatchCacheHitRatioLow",
        "NextwatchFallbackRatioHigh", "NextwatchLiveHitRateLow", "NextwatchModelTooOld"}
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


# ---- Grafana provisioning ---------------------------------------------------------------------

def test_grafana_provisioning_fits_the_compose_file_and_the_dashboard():
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["uid"] == DATASOURCE_UID and datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "prometheus" in compose
    mounts = dict(volume.split(":")[:2] for volume in compose["grafana"]["volumes"])
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "nextwatch" and dashboard["schemaVersion"] >= 39
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID and target["expr"], panel["title"]
    assert PANELS_WITHOUT_DATA_HERE <= {title for title, _ in dashboard_queries()}


# ---- a real Prometheus scraping a real API ---------------------------------------------------

def spark_env(tmp_path: Path) -> dict:
    import pyspark

    return {
        "SPARK_HOME": os.path.dirname(pyspark.__file__),
        "SPARK_CONF_DIR": str(ROOT / "deploy" / "spark"),  # as the compose file mounts it
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(tmp_path / "spark-work"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def spark_worker_registered(master_ui: int):
    def check() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{master_ui}/json/", timeout=1).json()["aliveworkers"] >= 1
        except (requests.RequestException, ValueError, KeyError):
            return False

    return check


def prometheus_config(path: Path, ports: dict[str, int]) -> Path:
    """A copy of prometheus.yml that scrapes this test's processes every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(ports) | {"redis"}, "a scrape job this test does not know about"
    del jobs["redis"]  # no redis_exporter here
    for name, job in jobs.items():
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[name]}"]}]  # metrics_path kept
    config["scrape_configs"] = list(jobs.values())
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


class Traffic:
    """Requests to the API, each on a new connection so that gunicorn spreads them over workers."""

    def __init__(self, base: str):
        self.base = base

    def watch(self, user: str, title: str, event_id: str | None = None) -> requests.Response:
        body = {"user_id": user, "content_id": title, **({"event_id": event_id} if event_id else {})}
        return requests.post(f"{self.base}/watched", json=body, timeout=5)

    def recommend(self, user: str) -> requests.Response:
        return requests.get(f"{self.base}/recommend/{user}", timeout=5)

    def show(self, user: str, titles: list[str]) -> requests.Response:
        return requests.post(f"{self.base}/impressions", json={"user_id": user, "content_ids": titles}, timeout=5)


def drive_traffic(traffic: Traffic, round_: str) -> None:
    for i in range(12):
        assert traffic.watch(f"{round_}U{i}", "C1010").json()["predicted_next"] == "C1045"
        assert traffic.recommend(f"{round_}U{i}").json()["cache_hit"] is True      # cache hit
        assert traffic.recommend(f"{round_}N{i}").json()["fallback_used"] is True   # miss, popular fallback
    for i in range(4):
        assert traffic.watch(f"{round_}U{i}", "C1045").status_code == 200           # predicted: live hits
    for _ in range(2):
        assert traffic.watch(f"{round_}U100", "C005", event_id="E1").status_code == 200  # 2nd: duplicate
    bad = requests.post(f"{traffic.base}/watched", data="nope", headers={"Content-Type": "application/json"},
                        timeout=5)
    assert bad.status_code == 400
    assert traffic.recommend("x" * 200).status_code == 400
    for i in range(2):  # three titles shown, one of them watched: an impression hit rate of 1/3
        assert traffic.show(f"{round_}I{i}", ["C1045", "C1011", "C000"]).status_code == 200
        assert traffic.watch(f"{round_}I{i}", "C1045").status_code == 200


def drive_experiment_traffic(traffic: Traffic, experiment: Experiment, round_: str) -> None:
    """Per arm, four viewers watch C1010 (C1045 predicted); in arm A one of them watches C1045
    next, in arm B three: hit rates of 1/5 and 3/7 in the round. No GET /recommend here, so
    that every cache hit of the test is one of drive_traffic's (the new-title check counts on it)."""
    candidates = [f"{round_}X{i}" for i in range(64)]
    for arm, hitters in (("A", 1), ("B", 3)):
        users = [user for user in candidates if experiment.arm_for(user).name == arm][:4]
        assert len(users) == 4
        for user in users:
            answer = traffic.watch(user, "C1010").json()
            assert (answer["experiment"], answer["arm"], answer["predicted_next"]) == (EXPERIMENT, arm, "C1045")
        for user in users[:hitters]:
            assert traffic.watch(user, "C1045").status_code == 200


class PrometheusApi:
    def __init__(self, base: str):
        self.base = base

    def query(self, expr: str, at: float | None = None) -> dict:
        """The instant query's data, evaluated now or at unix time ``at``."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        answer = requests.get(f"{self.base}/api/v1/query", params=params, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", f"{expr}\n{body}"
        return body["data"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, description: str, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                targets = {sample["metric"]["job"]: sample["value"][1] for sample in self.query("up")["result"]}
                pytest.fail(f"Prometheus: waited {timeout:.0f} s for {description}; up by job: {targets}")
            time.sleep(0.5)


def scraped_value(api_base: str, sample: str) -> float:
    return parse_metrics(requests.get(f"{api_base}/metrics", timeout=5).text)[sample]


def caught_up(prometheus: PrometheusApi, api_base: str, sample: str, expr: str):
    """A check: Prometheus's value of ``expr`` is what the API's /metrics says for ``sample``."""
    return lambda: prometheus.value(expr) == scraped_value(api_base, sample)


WATCHES = ("watch_events_total", 'sum(watch_events_total{job="nextwatch-api"})')
FAILED_WATCHES = ('http_request_duration_seconds_count{endpoint="/watched",method="POST",status="503"}',
                  'sum(http_request_duration_seconds_count{job="nextwatch-api", endpoint="/watched", status="503"})')


def redis_outage(traffic: Traffic, redis: RedisServer, prometheus: PrometheusApi) -> RedisServer:
    """Stop Redis, let watches fail (503) and recommendations degrade, start Redis again.

    A series counts from its second sample: the first failures create the 503 series, and only
    the failures scraped after that show in rates, so the outage spans a few scrapes."""
    redis.stop()
    for _ in range(2):
        for i in range(3):
            assert traffic.watch(f"aU{i}", "C1046").status_code == 503
            assert traffic.recommend(f"aU{i}").status_code in (200, 503)  # 200: degraded, from memory
        prometheus.wait_for("the failures scraped", caught_up(prometheus, traffic.base, *FAILED_WATCHES))
    restarted = RedisServer(redis.data_dir, port=redis.port, persistent=True).start()
    ready = http_ok(f"{traffic.base}/readyz")
    deadline = time.monotonic() + 15
    while not ready():
        assert time.monotonic() < deadline, "the API did not recover after Redis came back"
        time.sleep(0.2)
    return restarted


@pytest.fixture(scope="module")
def scraped_stack(tmp_path_factory):
    """API, Spark master and worker, Prometheus; traffic driven; yields the Prometheus API."""
    tmp = tmp_path_factory.mktemp("monitoring")
    supervisor = Supervisor()
    redis = RedisServer(tmp / "redis", persistent=True).start()
    try:
        ports = {"nextwatch-api": free_port(), "spark-master": free_port(), "spark-worker": free_port(),
                 "prometheus": free_port()}
        spark_class = str(Path(sys.executable).parent / "spark-class")
        master_rpc = free_port()
        # The JVMs start slowly: launch them first, wait for them last.
        supervisor.start("spark-master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                          "--port", str(master_rpc), "--webui-port", str(ports["spark-master"])],
                         spark_env(tmp))
        supervisor.start("spark-worker", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                          "--webui-port", str(ports["spark-worker"]), "--cores", "1", "--memory",
                                          "512m", f"spark://127.0.0.1:{master_rpc}"], spark_env(tmp))

        settings = Settings(redis_url=redis.url, key_prefix="nwmon")
        store = Store.from_settings(settings)
        first = publish_test_model(store, DEFAULT_NEIGHBOURS)
        model = store.models.load(first)  # published again as training does, with what it records
        model.trained_at = time.time() - 90
        store.models.publish(model, extra_meta={"duration_seconds": "42.5", "ndcg@10": "0.3125"})
        store.catalog.save_info([{"content_id": NEW_TITLE, "available_from": time.time() - 3600}])
        # Both arms serve the same predictions (the test model has no sequence network), so
        # drive_traffic's answers hold whichever arm a viewer falls in.
        experiment = Experiments(store).start(EXPERIMENT, ["A=current:50", "B=table:50"])
        store.close()

        api_base = f"http://127.0.0.1:{ports['nextwatch-api']}"
        supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port",
                                 str(ports["nextwatch-api"]), "--workers", "2"],
                         {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix},
                         ready=http_ok(f"{api_base}/readyz"), timeout=60)
        prometheus_base = f"http://127.0.0.1:{ports['prometheus']}"
        config = prometheus_config(tmp / "prometheus.yml", ports)
        supervisor.start("prometheus", [tool("prometheus", "prometheus"), f"--config.file={config}",
                                        f"--storage.tsdb.path={tmp / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                         ready=http_ok(f"{prometheus_base}/-/ready"), timeout=30)

        prometheus = PrometheusApi(prometheus_base)
        traffic = Traffic(api_base)

        scraped_up_to_now = caught_up(prometheus, api_base, *WATCHES)
        # Prometheus hands its first targets to the scrapers after a few seconds; traffic before
        # the first scrape would leave every rate at zero.
        prometheus.wait_for("the API scraped", lambda: prometheus.value('up{job="nextwatch-api"}') == 1)
        drive_traffic(traffic, "a")
        drive_experiment_traffic(traffic, experiment, "a")  # creates the arms' series
        prometheus.wait_for("the first round scraped", scraped_up_to_now)
        redis = redis_outage(traffic, redis, prometheus)
        drive_traffic(traffic, "b")
        drive_experiment_traffic(traffic, experiment, "b")  # counted in increase(): its series exist now
        worker_registered = spark_worker_registered(ports["spark-master"])
        deadline = time.monotonic() + 45
        while not worker_registered():
            assert time.monotonic() < deadline, "the Spark worker did not register with the master"
            time.sleep(0.5)
        prometheus.wait_for("every target up and the second round scraped", lambda: (
            prometheus.value("count(up == 1)") == len(ports) and scraped_up_to_now()
            and prometheus.value('sum(metrics_master_aliveWorkers_Value{job="spark-master"})') == 1))
        time.sleep(2)  # two more scrapes: every rate has samples on both sides of the last request
        yield prometheus
    finally:
        supervisor.stop_all()
        redis.stop()


def test_prometheus_listens_on_loopback_only(scraped_stack):
    flags = requests.get(f"{scraped_stack.base}/api/v1/status/flags", timeout=5).json()["data"]
    assert flags["web.listen-address"].startswith("127.0.0.1:")


def test_every_dashboard_query_parses_and_the_api_panels_have_data(scraped_stack):
    empty = []
    for title, expr in dashboard_queries():
        result = scraped_stack.query(as_prometheus_runs_it(expr))["result"]
        values = [float(sample["value"][1]) for sample in result]
        if title in PANELS_WITHOUT_DATA_HERE:
            continue
        if not any(math.isfinite(value) for value in values):
            empty.append(f"{title}: {expr} -> {result}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_dashboard_shows_what_the_traffic_did(scraped_stack):
    def panel(title: str, window: str = RATE_WINDOW) -> list[dict]:
        (expr, *_) = [expr for t, expr in dashboard_queries() if t == title]
        return scraped_stack.query(as_prometheus_runs_it(expr, window))["result"]

    statuses = {(s["metric"]["endpoint"], s["metric"]["status"]) for s in panel("Errors per second by endpoint and status")}
    assert {("/watched", "400"), ("/watched", "503"), ("/recommend/<user_id>", "400")} <= statuses
    assert float(panel("5xx error ratio (/watched, /recommend)")[0]["value"][1]) > 0
    steps = {s["metric"]["step"]: float(s["value"][1]) for s in panel("Fallbacks per second by step")}
    assert steps["popular"] > 0
    assert float(panel("Model version")[0]["value"][1]) == 2
    assert float(panel("Offline NDCG@10")[0]["value"][1]) == pytest.approx(0.3125)
    assert float(panel("Training duration")[0]["value"][1]) == pytest.approx(42.5)
    assert 0 < float(panel("Live hit rate of recommendations")[0]["value"][1]) < 1

    # Over a window that holds the whole test, ratios of two counters that both start at 0 are
    # exact (rate() extrapolates both alike): one watch for every three titles shown.
    assert float(panel("Impression hit rate", DASHBOARD_RANGE)[0]["value"][1]) == pytest.approx(1 / 3)
    # Every cache hit answered the new title (so did some watches' answers), and no answer
    # counts twice: between one per cache hit and one per answer.
    assert float(panel("New-title recommendations")[0]["value"][1]) > 0
    (new_titles,) = [expr for t, expr in dashboard_queries() if t == "New-title recommendations"]
    new_rate = as_prometheus_runs_it(new_titles, DASHBOARD_RANGE)
    per_cache_hit = scraped_stack.value(f"({new_rate}) / "  # one query: both rates at the same instant
                                        f'sum(rate(cache_hits_total{{job="nextwatch-api"}}[{DASHBOARD_RANGE}]))')
    per_answer = scraped_stack.value(f"({new_rate}) / "
                                     f'sum(rate(recommendation_answers_total{{job="nextwatch-api"}}[{DASHBOARD_RANGE}]))')
    assert per_cache_hit >= 1.0 - 1e-9 and 0 < per_answer <= 1.0 + 1e-9


def test_the_experiment_panel_gives_each_arm_its_hit_rate_and_wilson_interval(scraped_stack):
    title = "Experiment arms: live hit rate with 95% confidence interval"
    columns = ("hit rate", "lower", "upper", "watches", "hits")  # the table's targets A..E, in order
    table: dict[str, dict[str, float]] = {}
    at = time.time()  # the table's queries at one instant, as Grafana sends them: extrapolated alike
    for column, expr in zip(columns, [expr for t, expr in dashboard_queries() if t == title], strict=True):
        for sample in scraped_stack.query(as_prometheus_runs_it(expr), at)["result"]:
            assert sample["metric"]["experiment"] == EXPERIMENT
            table.setdefault(sample["metric"]["arm"], {})[column] = float(sample["value"][1])
    assert set(table) == {"A", "B"}
    for arm, row in table.items():
        assert set(row) == set(columns), arm
        # increase() extrapolates, so counts are not whole; the interval must fit what it shows.
        assert 0 < row["hits"] < row["watches"], arm
        assert row["hit rate"] == pytest.approx(row["hits"] / row["watches"]), arm
        assert (row["lower"], row["upper"]) == pytest.approx(wilson_interval(row["hits"], row["watches"])), arm
        assert 0 < row["lower"] < row["hit rate"] < row["upper"] < 1, arm


def test_every_alert_expression_evaluates_on_real_series(scraped_stack):
    for rule in alert_rules():
        scraped_stack.query(rule["expr"])  # asserts status success
    # Prometheus itself loaded alerts.yml through rule_files and evaluates every rule cleanly.
    def evaluated() -> list[dict]:
        groups = requests.get(f"{scraped_stack.base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    scraped_stack.wait_for("every rule evaluated", lambda: all(r["health"] != "unknown" for r in evaluated()))
    loaded = evaluated()
    assert {rule["name"] for rule in loaded} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in loaded), [(r["name"], r.get("lastError")) for r in loaded]
