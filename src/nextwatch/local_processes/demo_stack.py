"""`nextwatch demo`: the compose stack's processes on one machine, with embedded defaults.

A private redis-server (AOF on, data in the data folder), the generated demo catalog and watch
history, the Spark master and worker, the trainer on its schedule (its first run is the first
model), the archiver, the API (granian), Prometheus with the compose stack's
scrape and alert config, and redis_exporter, JupyterLab and Grafana when they are installed.
What is not installed is skipped with a line saying how to get it (`make demo` installs all but
Grafana, which no Debian package provides). A second run reuses the data
and the published model and serves within seconds. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
import time
from pathlib import Path

from ..settings import Settings
from . import parts
from .data_setup import set_up_data
from .monitoring import grafana_provisioning, local_config
from .new_title_report import NewTitleReport
from .redis_cluster import ClusterError, LocalRedisCluster
from .redis_server import RedisServer, RedisServerError, free_port
from .summary import print_summary
from .supervisor import StartError, Supervisor


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    redis_port: int = 6380
    prometheus_port: int = 9090
    seed: int = 7
    retrain: bool = False
    train_every: str = "15m"  # the compose trainer's schedule
    spark_cluster: bool = True  # a standalone master and worker, as in compose; else local mode
    any_free_ports: bool = False  # Spark, exporter, Jupyter, Grafana on free ports, not compose's
    redis_cluster: bool = False  # a Redis Cluster (3 masters, 3 replicas) instead of one redis-server
    report_seconds: float = 300.0  # how often to report how often new titles are recommended


class DemoError(RuntimeError):
    pass


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise _Interrupted()


def run_demo(settings: Settings, options: DemoOptions = DemoOptions()) -> int:
    data_dir = Path(settings.data_dir).resolve()
    if free_port(settings.port) != settings.port:
        print(f"nextwatch demo: port {settings.port} is in use; choose another with --port or NEXTWATCH_PORT",
              file=sys.stderr)
        return 1
    supervisor = Supervisor()
    redis = _redis(data_dir, options)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        redis.start()
        settings = settings.with_overrides(redis_url=redis.url)
        layout = _layout(settings, data_dir, redis.url, options)
        published = set_up_data(settings, layout, options.seed)
        if published and not options.retrain:
            print(f"model version {published} is already published (use --retrain to train again)")
        plan = _plan(layout, settings, options)
        # The parts that listen on ports chosen above start first, all at once (the JVMs take
        # their time, in parallel), and are waited for before the trainer and the archiver start:
        # the trainer's Spark driver binds random ports of its own and could take a chosen one
        # that nothing holds yet.
        listening = [part for part in plan.background if part.ready is not None]
        for part in listening:
            supervisor.start(part.name, part.command, part.env, log=part.log)
        for part in listening:
            supervisor.wait_ready(part.name, part.ready, part.ready_timeout)
        for part in plan.background:
            if part.ready is None:
                supervisor.start(part.name, part.command, part.env, log=part.log)
        version = published
        if options.retrain or not published:
            version = _wait_for_first_model(settings, supervisor, layout, published, options.spark_cluster)
        api = plan.api
        supervisor.start(api.name, api.command, api.env, ready=api.ready, timeout=api.ready_timeout)
        running = [*plan.background, api]
        print_summary(settings.port, running, plan.skipped, plan.dropped, supervisor.pids(), redis, version,
                      _api_keys_configured(settings))
        report = NewTitleReport(settings.port, options.report_seconds)
        while (exited := supervisor.first_exited()) is None:
            report.maybe_print()
            time.sleep(0.5)
        name, status = exited
        log = next((part.log for part in running if part.name == name and part.log), None)
        print(f"nextwatch demo: {name} exited with status {status}{f' (log: {log})' if log else ''}; stopping",
              file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Interrupted):
        print("\nstopping ...", flush=True)
        return 0
    except (DemoError, StartError, RedisServerError, ClusterError) as problem:
        print(f"nextwatch demo: {problem} (logs in {data_dir / 'logs'}); stopping", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the stopping short and leave processes behind.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        redis.stop()
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, previous)
        print("stopped: no nextwatch process is left running", flush=True)


def _redis(data_dir: Path, options: DemoOptions):
    """The demo's private Redis: one redis-server that keeps its data between runs, or a fresh
    Redis Cluster on loopback (3 masters, 3 replicas, AOF on) each run."""
    if not options.redis_cluster:
        server = RedisServer(data_dir / "redis", port=free_port(options.redis_port), persistent=True)
        print(f"starting redis-server on 127.0.0.1:{server.port} (data in {server.data_dir}, AOF on)")
        return server
    folder = data_dir / "redis-cluster"
    shutil.rmtree(folder, ignore_errors=True)  # a cluster's node files belong to one cluster
    print(f"starting a Redis Cluster of 3 masters and 3 replicas on loopback (data in {folder}, AOF on, "
          "fresh each run)")
    return LocalRedisCluster(folder, appendonly=True)


def _layout(settings: Settings, data_dir: Path, redis_url: str, options: DemoOptions) -> parts.Layout:
    archive_dir = Path(settings.archive_dir)
    if settings.archive_dir == Settings.archive_dir and settings.data_dir != Settings.data_dir:
        archive_dir = data_dir / "archive"  # the archive follows --data-dir unless set on its own
    deploy_dir = parts.find_deploy_dir()
    notebooks = deploy_dir.parent / "notebooks" if deploy_dir else None
    ports = parts.choose_ports(options.prometheus_port, options.any_free_ports)
    return parts.Layout(data_dir=data_dir, archive_dir=archive_dir.resolve(),
                        demo_events=data_dir / "demo" / "events.parquet", redis_url=redis_url,
                        api_port=settings.port, ports=ports, deploy_dir=deploy_dir,
                        notebooks_dir=notebooks if notebooks and notebooks.is_dir() else None)


@dataclasses.dataclass
class _Plan:
    background: list[parts.Part]  # started first, in this order
    api: parts.Part  # started once a model is published
    skipped: list[parts.Skipped]
    dropped: dict[str, list[str]]  # Prometheus jobs left out -> their compose targets


def _plan(layout: parts.Layout, settings: Settings, options: DemoOptions) -> _Plan:
    """What to run, and what not and why."""
    running: list[parts.Part] = []
    skipped: list[parts.Skipped] = []

    def add(found) -> None:
        if isinstance(found, parts.Skipped):
            skipped.append(found)
        else:
            running.extend(found if isinstance(found, list) else [found])

    spark_master = settings.spark_master
    if options.spark_cluster:
        cluster = parts.spark_cluster(layout)
        add(cluster)
        if not isinstance(cluster, parts.Skipped):
            spark_master = parts.spark_master_url(layout)
    else:
        skipped.append(parts.Skipped("spark", f"--no-spark-cluster: no master and worker; the trainer runs Spark "
                                              f"in local mode ({spark_master})"))
    add(parts.trainer(layout, options.train_every, spark_master))
    add(parts.archiver(layout))
    add(parts.redis_exporter(layout))
    api = parts.api(layout, settings.host, settings.workers)
    dropped: dict[str, list[str]] = {}
    prometheus: parts.Part | parts.Skipped
    if layout.deploy_dir is None:
        prometheus = parts.Skipped("prometheus", "deploy/prometheus/prometheus.yml not found: run the demo from "
                                                 "a source checkout")
    else:
        prometheus, dropped = _prometheus(layout, [*running, api])
    add(prometheus)
    grafana = parts.grafana(layout, prometheus_runs=isinstance(prometheus, parts.Part))
    if isinstance(grafana, parts.Part):
        grafana_dir = layout.deploy_dir / "grafana"
        grafana_provisioning(grafana_dir / "provisioning", parts.grafana_provisioning_dir(layout),
                             f"http://127.0.0.1:{layout.ports['prometheus']}", grafana_dir / "dashboards")
    add(grafana)
    add(parts.jupyter(layout, spark_master))
    return _Plan(running, api, skipped, dropped)


def _prometheus(layout: parts.Layout, others: list[parts.Part]):
    """Prometheus with deploy/prometheus/prometheus.yml pointed at the parts that run here."""
    program = parts.prometheus(layout, layout.data_dir / "prometheus" / "prometheus.yml")
    if isinstance(program, parts.Skipped):
        return program, {}
    addresses = {compose: local for part in [*others, program] for compose, local in part.scraped_as.items()}
    source = layout.deploy_dir / "prometheus" / "prometheus.yml"
    config = local_config(source.read_text(), addresses, source.parent)
    header = (f"# Written by `nextwatch demo` from {source} at every start: the same jobs and rules,\n"
              f"# targets on this machine. Edit that file, not this one.\n")
    path = layout.data_dir / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + config.text)
    return program, config.dropped


def _wait_for_first_model(settings: Settings, supervisor: Supervisor, layout: parts.Layout, before: int,
                          on_cluster: bool) -> int:
    """The trainer trains as soon as it starts: wait for that run to publish a version."""
    from ..store import Store

    log = layout.logs / "trainer.log"
    where = "on the local Spark cluster" if on_cluster else "with Spark in local mode"
    print(f"training the first model {where}: the trainer's first run (log: {log}) ...", flush=True)
    started = time.monotonic()
    next_note = started + 30
    store = Store.from_settings(settings)
    try:
        while (version := store.models.current_version() or 0) <= before:
            exited = supervisor.first_exited()
            if exited is not None:
                raise DemoError(f"{exited[0]} exited with status {exited[1]} before the first model was published")
            if time.monotonic() > next_note:
                print(f"  ... {time.monotonic() - started:.0f} s; trainer: {_last_line(log)}", flush=True)
                next_note += 30
            time.sleep(0.5)
    finally:
        store.close()
    print(f"published model version {version} in {time.monotonic() - started:.0f} s", flush=True)
    return version


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, 2) - 4096))
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output yet)"
    return lines[-1][:160] if lines else "(no output yet)"


def _api_keys_configured(settings) -> bool:
    from ..errors import StoreUnavailable
    from ..store import Store

    store = Store.from_settings(settings)
    try:
        return bool(store.api_keys.records())
    except StoreUnavailable:
        return False
    finally:
        store.close()
