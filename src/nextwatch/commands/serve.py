"""nextwatch serve: the HTTP API under granian, with several worker processes.

Like Redis's protected mode, it will not listen beyond loopback while no API key is configured
(POST /watched and /admin/* would accept anyone who reaches the port) unless told so with
--allow-open (NEXTWATCH_ALLOW_OPEN=1). While Redis cannot be reached the keys cannot be
counted, so it refuses then too: an API started before its keys can be read could come up open
the moment Redis answers with none.
"""

import ipaddress
import sys

from ..settings import load_settings
from .options import add_redis_option

NO_KEY = 2  # exit status: refused, no API key is configured (a usage error, as argparse's)
KEYS_UNREADABLE = 1  # exit status: refused, Redis cannot be reached to read the keys (may pass later)


class StartRefused(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def add_parser(subparsers):
    parser = subparsers.add_parser("serve", help="serve the HTTP API",
                                   description="Serve the HTTP API with granian worker processes. Listening on an "
                                               "address other than loopback needs an API key in Redis (nextwatch "
                                               "keys add) or --allow-open.")
    add_redis_option(parser)
    parser.add_argument("--host", help="listen address (env NEXTWATCH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (env NEXTWATCH_PORT, default 5000)")
    parser.add_argument("--workers", type=int, help="worker processes (env NEXTWATCH_WORKERS, default 4)")
    parser.add_argument("--threads", type=int, help="Python threads per worker (env NEXTWATCH_THREADS, default 4)")
    parser.add_argument("--allow-open", action="store_true",
                        help="listen beyond loopback even with no API key configured, so that anyone who reaches "
                             "the port may write (env NEXTWATCH_ALLOW_OPEN=1)")
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url, host=args.host, port=args.port, workers=args.workers,
                             threads=args.threads, allow_open=True if args.allow_open else None)
    from ..model.compiled import compile_kernels
    from ..server import serve

    compile_kernels()  # once here, before the workers start: they then load the compiled code
    try:
        serve(settings, before_start=check_keys_and_announce)
    except StartRefused as refused:
        print(refused, file=sys.stderr, flush=True)
        return refused.status
    return 0


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the name localhost. Any other name is not resolved: it may stand for
    an outside address, now or later."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_keys_and_announce(settings) -> None:
    """Refuse (StartRefused) to listen beyond loopback without a key, else say at start-up
    whether writes need an API key (they do not while none is configured)."""
    from ..service.access import startup_notice
    from ..store import Store

    store = Store.from_settings(settings)
    try:
        refusal = exposure_refusal(settings, store)
        if refusal is not None:
            raise refusal
        print(startup_notice(store), flush=True)
    finally:
        store.close()


def exposure_refusal(settings, store) -> StartRefused | None:
    """Why ``settings`` must not be served with the keys ``store`` holds, or None."""
    from ..errors import StoreUnavailable

    if settings.allow_open or is_loopback(settings.host):
        return None
    address = f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"
    ways_out = ("  listen on loopback only:     --host 127.0.0.1\n"
                "  or serve open, on purpose:   --allow-open (env NEXTWATCH_ALLOW_OPEN=1)")
    try:
        configured = bool(store.api_keys.records())
    except StoreUnavailable as problem:
        return StartRefused(
            f"nextwatch serve: refusing to listen on {address}: Redis cannot be reached ({problem.detail}), so "
            "whether an API key is configured cannot be checked, and without one POST /watched and /admin/* would "
            f"accept anyone who reaches that address.\n  start Redis (NEXTWATCH_REDIS_URL) and serve again\n{ways_out}",
            KEYS_UNREADABLE)
    if configured:
        return None
    return StartRefused(
        f"nextwatch serve: refusing to listen on {address} while no API key is configured: POST /watched and "
        "/admin/* would accept anyone who reaches that address.\n"
        "  create a key, then serve again:  nextwatch keys add NAME --role admin  (same Redis and key prefix)\n"
        f"{ways_out}", NO_KEY)
