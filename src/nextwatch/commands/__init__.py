"""One module per `nextwatch` subcommand, each with ``add_parser(subparsers)`` and ``run(args)``.

Heavy imports (Flask, Spark) happen inside ``run``, so `nextwatch --help` is instant and
`serve` can set up multiprocess metrics before Flask is imported.
"""

from . import archive, demo, evaluate, experiments, import_data, keys, models, rules, serve, train

# The order of `nextwatch --help`.
COMMANDS = [serve, train, demo, archive, import_data, models, rules, experiments, keys, evaluate]
