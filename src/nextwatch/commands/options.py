"""Flags that several subcommands share."""


def add_redis_option(parser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (env NEXTWATCH_REDIS_URL)")


def run_on_store(args, command: str, body) -> int:
    """Run ``body(store, settings)`` against the Redis of ``--redis-url`` (or the settings) and
    close it after; a NextwatchError becomes its detail on stderr and exit status 2 for bad
    input, 1 otherwise. The shape of every admin command (keys, rules, experiments)."""
    import sys

    from ..errors import NextwatchError
    from ..settings import load_settings
    from ..store import Store

    settings = load_settings(redis_url=args.redis_url)
    store = Store.from_settings(settings)
    try:
        return body(store, settings)
    except NextwatchError as problem:
        print(f"nextwatch {command}: {problem.detail}", file=sys.stderr)
        return 2 if problem.status == 400 else 1
    finally:
        store.close()
