"""nextwatch demo: the whole service on this machine with embedded defaults."""

from ..settings import load_settings


def add_parser(subparsers):
    parser = subparsers.add_parser("demo", help="run the whole service locally with a generated catalog",
                                   description="Start a private redis-server, generate the demo catalog and "
                                               "watch history, train the first model and serve the API.")
    parser.add_argument("--port", type=int, help="API port (env NEXTWATCH_PORT, default 5000)")
    parser.add_argument("--workers", type=int, help="API worker processes (default 4)")
    parser.add_argument("--redis-port", type=int, default=6380,
                        help="port of the private redis-server (default 6380, another free one if taken)")
    parser.add_argument("--data-dir", help="folder for Redis data and the demo files (default .nextwatch)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo catalog")
    parser.add_argument("--retrain", action="store_true", help="train again even if a model is published")
    return parser


def run(args) -> int:
    settings = load_settings(port=args.port, workers=args.workers, data_dir=args.data_dir)
    from ..localstack.demo import run_demo

    return run_demo(settings, redis_port=args.redis_port, seed=args.seed, retrain=args.retrain)
