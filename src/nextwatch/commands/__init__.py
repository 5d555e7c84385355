"""One module per `nextwatch` subcommand, each with ``add_parser(subparsers)`` and ``run(args)``.
A module is named after its command, but for ``import_data`` (`nextwatch import`: ``import`` is
a keyword) and ``api_keys`` (`nextwatch keys`: ``nextwatch/keys.py`` holds the Redis key names).

Heavy imports (Flask, Spark) happen inside ``run``, so `nextwatch --help` is instant and
`serve` can set up multiprocess metrics before Flask is imported.
"""

from . import (api_keys, archive, demo, evaluate, experiments, import_data, models, rules, serve,
               train)

# The order of `nextwatch --help`.
COMMANDS = [serve, train, demo, archive, import_data, models, rules, experiments, api_keys,
            evaluate]
