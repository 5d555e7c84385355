"""The processes of docker-compose.yml as `nextwatch demo` runs them on this machine.

Each function returns the ``Part`` to start, or ``Skipped`` saying why not and how to get the
program. Every part listens on 127.0.0.1 only and keeps its data and log in the demo's folder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Callable

from .redis_server import free_port
from .supervisor import http_ok

LOOPBACK = "127.0.0.1"
# The compose stack's ports, taken when free (the API's and Redis's are chosen by the demo).
COMPOSE_PORTS = {"prometheus": 9090, "spark_master": 7077, "spark_master_ui": 8080, "spark_worker_ui": 8081,
                 "redis_exporter": 9121, "jupyter": 8888, "grafana": 3000}


@dataclasses.dataclass
class Part:
    name: str  # the docker-compose service it stands for
    command: list[str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    log: Path | None = None  # None: its output goes to the terminal
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 120.0
    urls: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (label, URL, what to look at)
    scraped_as: dict[str, str] = dataclasses.field(default_factory=dict)  # compose target -> local target


@dataclasses.dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the demo's parts find each other and keep their files."""

    data_dir: Path
    archive_dir: Path
    demo_events: Path
    redis_url: str
    api_port: int
    ports: dict[str, int]  # COMPOSE_PORTS's names -> the port used here
    deploy_dir: Path | None  # the checkout's deploy/ (compose configs), None outside a checkout
    notebooks_dir: Path | None
    search_path: str | None = None  # PATH to look for programs on (None: PATH and the venv)

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def program(self, *names: str) -> str | None:
        # The venv's bin first: `.venv/bin/nextwatch demo` runs without the venv on PATH.
        path = self.search_path
        if path is None:
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return next((found for name in names if (found := shutil.which(name, path=path))), None)


def choose_ports(prometheus: int, any_free: bool) -> dict[str, int]:
    """The compose stack's ports where free (or any free ones with ``any_free``), all distinct."""
    chosen: dict[str, int] = {}
    for name, compose_port in COMPOSE_PORTS.items():
        preferred = prometheus if name == "prometheus" else (None if any_free else compose_port)
        port = free_port(preferred)
        while port in chosen.values():
            port = free_port()
        chosen[name] = port
    return chosen


def find_deploy_dir() -> Path | None:
    """deploy/ of the source checkout nextwatch runs from (the current folder, or the package's)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "deploy" / "prometheus" / "prometheus.yml").is_file():
            return root / "deploy"
    return None


def _nextwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "nextwatch.cli", *args]


def api(layout: Layout, host: str, workers: int) -> Part:
    base = layout.api_url
    return Part("api", _nextwatch("serve", "--host", host, "--port", str(layout.api_port), "--workers", str(workers)),
                {"NEXTWATCH_REDIS_URL": layout.redis_url}, ready=http_ok(f"{base}/healthz"), ready_timeout=60,
                urls=[("API", base, "/healthz, /readyz, /openapi.json, /admin/models"),
                      ("page", f"{base}/", "watch titles and see what comes next"),
                      ("metrics", f"{base}/metrics", "the counters Prometheus scrapes, summed over workers")],
                scraped_as={"api:5000": f"{LOOPBACK}:{layout.api_port}"})


def archiver(layout: Layout) -> Part:
    return Part("archiver", _nextwatch("archive", "--out", str(layout.archive_dir)),
                {"NEXTWATCH_REDIS_URL": layout.redis_url}, log=layout.logs / "archiver.log")


DEMO_TRAIN_MINUTES = "4"


def trainer(layout: Layout, every: str, spark_master: str) -> Part:
    # The compose trainer's flags, plus the generated watch history: the archive only holds
    # what was watched through the API, and the history is most of the demo's data.
    command = _nextwatch("train", "--every", every, "--spark-master", spark_master,
                         "--events", str(layout.demo_events), "--events", str(layout.archive_dir))
    # A short time box, so that the first model (with its sequence part) is up within minutes.
    box = os.environ.get("NEXTWATCH_TRAIN_MINUTES") or DEMO_TRAIN_MINUTES
    return Part("trainer", command, {"NEXTWATCH_REDIS_URL": layout.redis_url, "SPARK_LOCAL_IP": LOOPBACK,
                                     "NEXTWATCH_TRAIN_MINUTES": box},
                log=layout.logs / "trainer.log")


def spark_cluster(layout: Layout) -> list[Part] | Skipped:
    """A standalone master and worker from the pyspark package's own launcher, as in compose."""
    spark_class = layout.program("spark-class")
    if spark_class is None:
        return Skipped("spark", "pyspark's spark-class not found: pip install -e . in the venv")
    if layout.program("java") is None:
        return Skipped("spark", "java not found: apt-get install openjdk-17-jre-headless (the trainer needs it too)")
    spec = importlib.util.find_spec("pyspark")
    env = {"SPARK_HOME": str(Path(spec.origin).parent), "SPARK_LOCAL_IP": LOOPBACK,
           "SPARK_WORKER_DIR": str(layout.data_dir / "spark-work"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if layout.deploy_dir is not None:
        env["SPARK_CONF_DIR"] = str(layout.deploy_dir / "spark")  # the metrics sink Prometheus scrapes
    ports = layout.ports
    master_ui = f"http://{LOOPBACK}:{ports['spark_master_ui']}"
    worker_ui = f"http://{LOOPBACK}:{ports['spark_worker_ui']}"
    master = Part("spark-master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
                                   "--port", str(ports["spark_master"]), "--webui-port", str(ports["spark_master_ui"])],
                  env, log=layout.logs / "spark-master.log", ready=http_ok(f"{master_ui}/json/"),
                  urls=[("Spark master UI", master_ui, "alive workers; the trainer's application while it trains")],
                  scraped_as={"spark-master:8080": f"{LOOPBACK}:{ports['spark_master_ui']}"})
    worker = Part("spark-worker", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", LOOPBACK,
                                   "--webui-port", str(ports["spark_worker_ui"]), "--cores", "2", "--memory", "2g",
                                   spark_master_url(layout)],
                  env, log=layout.logs / "spark-worker.log", ready=http_ok(f"{worker_ui}/json/"),
                  urls=[("Spark worker UI", worker_ui, "executors and their logs")],
                  scraped_as={"spark-worker:8081": f"{LOOPBACK}:{ports['spark_worker_ui']}"})
    return [master, worker]


def spark_master_url(layout: Layout) -> str:
    return f"spark://{LOOPBACK}:{layout.ports['spark_master']}"


def redis_exporter(layout: Layout) -> Part | Skipped:
    if layout.redis_url.startswith("redis+cluster://"):
        return Skipped("redis-exporter", "not run against the demo's Redis Cluster (one exporter per node is "
                                         "how a cluster is watched; see docs/scaling.md)")
    binary = layout.program("redis_exporter", "prometheus-redis-exporter")
    if binary is None:
        return Skipped("redis-exporter", "not installed: apt-get install prometheus-redis-exporter (`make demo` "
                                         "installs it)")
    port = layout.ports["redis_exporter"]
    return Part("redis-exporter", [binary, "-redis.addr", layout.redis_url,
                                   "-web.listen-address", f"{LOOPBACK}:{port}"],
                log=layout.logs / "redis-exporter.log", ready=http_ok(f"http://{LOOPBACK}:{port}/metrics"),
                urls=[("redis_exporter", f"http://{LOOPBACK}:{port}/metrics",
                       "Redis metrics as Prometheus scrapes them")],
                scraped_as={"redis-exporter:9121": f"{LOOPBACK}:{port}"})


def prometheus(layout: Layout, config: Path) -> Part | Skipped:
    binary = layout.program("prometheus")
    if binary is None:
        return Skipped("prometheus", "not installed: apt-get install prometheus")
    port = layout.ports["prometheus"]
    base = f"http://{LOOPBACK}:{port}"
    # The compose service's flags, with loopback and the demo's folder for the data.
    return Part("prometheus", [binary, f"--config.file={config}",
                               f"--storage.tsdb.path={layout.data_dir / 'prometheus' / 'data'}",
                               "--storage.tsdb.retention.time=15d", f"--web.listen-address={LOOPBACK}:{port}"],
                log=layout.logs / "prometheus.log", ready=http_ok(f"{base}/-/ready"), ready_timeout=60,
                urls=[("Prometheus UI", base, "/targets (every job up), /alerts (deploy/prometheus/alerts.yml)")],
                scraped_as={"localhost:9090": f"{LOOPBACK}:{port}"})


def jupyter(layout: Layout, spark_master: str) -> Part | Skipped:
    binary = layout.program("jupyter-lab")
    if binary is None:
        return Skipped("jupyter", f"not installed in this venv: {Path(sys.executable).parent / 'pip'} install -c "
                                  "constraints.txt -e '.[jupyter]' (`make demo` installs it)")
    if layout.notebooks_dir is None:
        return Skipped("jupyter", "notebooks/ not found: run the demo from a source checkout")
    port, token = layout.ports["jupyter"], secrets.token_hex(16)
    env = {"JUPYTER_TOKEN": token, "NEXTWATCH_REDIS_URL": layout.redis_url, "NEXTWATCH_API_URL": layout.api_url,
           "NEXTWATCH_ARCHIVE_DIR": str(layout.archive_dir), "NEXTWATCH_DATA_DIR": str(layout.data_dir),
           "NEXTWATCH_SPARK_MASTER": spark_master, "SPARK_LOCAL_IP": LOOPBACK}
    base = f"http://{LOOPBACK}:{port}"
    # JupyterLab refuses to run as root unless told; containers and CI machines often are root.
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    return Part("jupyter", [binary, "--no-browser", f"--ip={LOOPBACK}", f"--port={port}", *as_root,
                            "--ServerApp.port_retries=0", f"--notebook-dir={layout.notebooks_dir}"],
                env, log=layout.logs / "jupyter.log", ready=http_ok(f"{base}/api"),
                urls=[("JupyterLab", f"{base}/lab/tree/explore.ipynb?token={token}",
                       "notebooks/explore.ipynb, set up for this demo")])


# Why `make demo` installs everything but Grafana, and where to get it.
GRAFANA_MISSING = ("not installed, and `make demo` cannot install it: Grafana is not a Debian package (Grafana Labs "
                   "publishes it). Get it from Grafana's own apt repository (apt-get install grafana, after the "
                   "steps of https://grafana.com/docs/grafana/latest/setup-grafana/installation/debian/) or as a "
                   "standalone build from https://grafana.com/grafana/download with its bin/ on PATH; the demo "
                   "runs it once `grafana` or `grafana-server` is found")


def grafana_home(binary: str) -> str | None:
    """Grafana's home folder (conf/, public/): above a standalone build's bin/, or where the
    apt package puts it."""
    beside = Path(binary).resolve().parent.parent
    candidates = [beside, Path("/usr/share/grafana"), Path("/usr/local/share/grafana")]
    return next((str(path) for path in candidates if (path / "conf" / "defaults.ini").is_file()), None)


def grafana_provisioning_dir(layout: Layout) -> Path:
    return layout.data_dir / "grafana" / "provisioning"


def grafana(layout: Layout, prometheus_runs: bool) -> Part | Skipped:
    """Grafana with the compose stack's provisioning, which the demo copies to
    ``grafana_provisioning_dir`` with local addresses (monitoring.grafana_provisioning)."""
    binary = layout.program("grafana", "grafana-server")
    if binary is None:
        return Skipped("grafana", GRAFANA_MISSING)
    if not prometheus_runs:
        return Skipped("grafana", "its dashboards read Prometheus, which is not running")
    home = grafana_home(binary)
    if home is None:
        return Skipped("grafana", f"found {binary} but not its home folder (conf/defaults.ini beside its bin/, or "
                                  "/usr/share/grafana)")
    port = layout.ports["grafana"]
    env = {"GF_PATHS_DATA": str(layout.data_dir / "grafana" / "data"), "GF_PATHS_LOGS": str(layout.logs),
           "GF_PATHS_PLUGINS": str(layout.data_dir / "grafana" / "plugins"),
           "GF_PATHS_PROVISIONING": str(grafana_provisioning_dir(layout)),
           "GF_SERVER_HTTP_ADDR": LOOPBACK, "GF_SERVER_HTTP_PORT": str(port), "GF_USERS_ALLOW_SIGN_UP": "false",
           "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": str(layout.deploy_dir / "grafana" / "dashboards"
                                                             / "nextwatch.json")}
    # `grafana server` since Grafana 9.3; older packages ship only `grafana-server`.
    command = [binary, *(["server"] if Path(binary).name == "grafana" else []), f"--homepath={home}"]
    base = f"http://{LOOPBACK}:{port}"
    return Part("grafana", command, env, log=layout.logs / "grafana.log", ready=http_ok(f"{base}/api/health"),
                urls=[("Grafana", base, "dashboard nextwatch (admin/admin; Grafana asks for a new password)")])
