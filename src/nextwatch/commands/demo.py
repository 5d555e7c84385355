"""nextwatch demo: the compose stack's processes on this machine, with embedded defaults."""

from ..settings import load_settings
from .train import duration


def _schedule(text: str) -> str:
    duration(text)  # rejects what `nextwatch train --every` would reject, before anything starts
    return text


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help="run the whole stack locally with a generated catalog",
        description="Start a private redis-server, generate the demo catalog and watch history, and run what "
                    "docker-compose.yml runs: the Spark master and worker, the trainer on its schedule (its first "
                    "run trains the first model), the archiver, the API, Prometheus with deploy/prometheus's "
                    "config, and redis_exporter, Grafana and JupyterLab when they are installed. Ctrl-C stops "
                    "everything.")
    parser.add_argument("--port", type=int, help="API port (env NEXTWATCH_PORT, default 5000)")
    parser.add_argument("--workers", type=int, help="API worker processes (default 4)")
    parser.add_argument("--redis-port", type=int, default=6380,
                        help="port of the private redis-server (default 6380, another free one if taken)")
    parser.add_argument("--prometheus-port", type=int, default=9090,
                        help="Prometheus port (default 9090, another free one if taken)")
    parser.add_argument("--any-free-ports", action="store_true",
                        help="run Spark, redis_exporter, Grafana and JupyterLab on free ports rather than the "
                             "compose stack's (7077, 8080, 8081, 9121, 3000, 8888) even when those are free")
    parser.add_argument("--data-dir", help="folder for Redis data, the demo files, the archive and the logs "
                                           "(env NEXTWATCH_DATA_DIR, default .nextwatch)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo catalog")
    parser.add_argument("--retrain", action="store_true",
                        help="wait for the trainer's first run even if a model is published")
    parser.add_argument("--train-every", type=_schedule, default="15m", metavar="DURATION",
                        help="the trainer's schedule (default 15m, as in docker-compose.yml)")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="run on a Redis Cluster of 3 masters and 3 replicas on loopback instead of one "
                             "redis-server (started fresh each run)")
    parser.add_argument("--no-spark-cluster", action="store_true",
                        help="no Spark master and worker: the trainer runs Spark in local mode (lighter)")
    parser.add_argument("--report-every", type=float, default=300.0, metavar="SECONDS",
                        help="how often to report how many answers showed a title out today (default 300)")
    return parser


def run(args) -> int:
    settings = load_settings(port=args.port, workers=args.workers, data_dir=args.data_dir)
    from ..local_processes.demo_stack import DemoOptions, run_demo

    options = DemoOptions(redis_port=args.redis_port, prometheus_port=args.prometheus_port, seed=args.seed,
                          retrain=args.retrain, train_every=args.train_every, spark_cluster=not args.no_spark_cluster,
                          any_free_ports=args.any_free_ports, redis_cluster=args.redis_cluster,
                          report_seconds=args.report_every)
    return run_demo(settings, options)
