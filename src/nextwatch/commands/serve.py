"""nextwatch serve: the HTTP API under granian, with several worker processes."""

from ..settings import load_settings
from .options import add_redis_option


def add_parser(subparsers):
    parser = subparsers.add_parser("serve", help="serve the HTTP API",
                                   description="Serve the HTTP API with granian worker processes.")
    add_redis_option(parser)
    parser.add_argument("--host", help="listen address (env NEXTWATCH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (env NEXTWATCH_PORT, default 5000)")
    parser.add_argument("--workers", type=int, help="worker processes (env NEXTWATCH_WORKERS, default 4)")
    parser.add_argument("--threads", type=int, help="Python threads per worker (env NEXTWATCH_THREADS, default 4)")
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url, host=args.host, port=args.port, workers=args.workers,
                             threads=args.threads)
    from ..server import serve

    serve(settings, before_start=print_api_key_notice)
    return 0


def print_api_key_notice(settings) -> None:
    """Say at start-up whether writes need an API key (they do not while none is configured)."""
    from ..service.access import startup_notice
    from ..store import Store

    store = Store.from_settings(settings)
    try:
        print(startup_notice(store), flush=True)
    finally:
        store.close()
