"""Flags that several subcommands share."""


def add_redis_option(parser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (env NEXTWATCH_REDIS_URL)")
