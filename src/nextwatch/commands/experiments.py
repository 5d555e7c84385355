"""nextwatch experiments: A/B tests of models on live traffic (service/experiments.py).

    nextwatch experiments start NAME --arm A=current:50 --arm B=12:50
    nextwatch experiments list
    nextwatch experiments report NAME [--json]
    nextwatch experiments stop NAME [--promote ARM]
"""

import json
import time

from .options import add_redis_option, run_on_store


def add_parser(subparsers):
    parser = subparsers.add_parser("experiments", help="A/B tests of models: start, list, report, stop",
                                   description="Split users into arms that each serve a model version or a "
                                               "configuration (current, table, popular), and compare their live "
                                               "hit rates.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start an experiment (one runs at a time)")
    start.add_argument("name")
    start.add_argument("--arm", action="append", required=True, metavar="NAME=TARGET:SHARE",
                       help="an arm: a model version or current|table|popular, and its share in percent "
                            "(e.g. A=current:50); give two or more, shares adding up to 100")
    actions.add_parser("list", help="every experiment, running or stopped")
    report = actions.add_parser("report", help="hit rate per arm and the difference against the first arm")
    report.add_argument("name")
    report.add_argument("--json", action="store_true", help="one JSON object")
    stop = actions.add_parser("stop", help="stop an experiment; --promote serves an arm's model version")
    stop.add_argument("name")
    stop.add_argument("--promote", metavar="ARM", help="activate this arm's model version")
    for action in actions.choices.values():
        add_redis_option(action)
    return parser


def run(args) -> int:
    return run_on_store(args, "experiments", lambda store, settings: _run(args, store))


def _run(args, store) -> int:
    from ..service.experiments import Experiments

    experiments = Experiments(store)
    if args.action == "start":
        started = experiments.start(args.name, args.arm)
        arms = ", ".join(f"{a.name} -> {a.target} ({a.share:g}%)" for a in started.arms)
        print(f"experiment {started.name} started: {arms}; serving picks it up within a few seconds")
    elif args.action == "list":
        _list(experiments.all())
    elif args.action == "report":
        report = experiments.report(args.name)
        print(json.dumps(report, sort_keys=True) if args.json else _report_table(report))
    else:
        stopped = experiments.stop(args.name, args.promote)
        promoted = f"; arm {stopped.promoted} promoted" if stopped.promoted else ""
        print(f"experiment {stopped.name} stopped{promoted}")
    return 0


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds else "-"


def _list(found) -> None:
    if not found:
        print("no experiment has been started")
        return
    print(f"{'NAME':<24} {'STATE':<8} {'STARTED (UTC)':<20} {'STOPPED (UTC)':<20} ARMS")
    for experiment in found:
        arms = " ".join(f"{a.name}={a.target}:{a.share:g}" for a in experiment.arms)
        state = "running" if experiment.running else "stopped"
        print(f"{experiment.name:<24} {state:<8} {_when(experiment.started_at):<20} {_when(experiment.stopped_at):<20} "
              f"{arms}" + (f" (promoted {experiment.promoted})" if experiment.promoted else ""))


def _report_table(report: dict) -> str:
    control = report["arms"][0]["arm"]
    lines = [f"experiment {report['experiment']} ({'running' if report['running'] else 'stopped'}): hit rate = "
             "watches of a title the user's cached top-k held / watches", "",
             f"{'ARM':<10} {'TARGET':<9} {'WATCHES':>8} {'HITS':>7} {'HIT RATE':>9} {'95% CI':>17}  "
             f"AGAINST {control}"]
    for arm in report["arms"]:
        rate = f"{arm['hit_rate']:.4f}" if arm["hit_rate"] is not None else "-"
        interval = arm["hit_rate_ci95"]
        ci = f"{interval[0]:.4f}-{interval[1]:.4f}" if interval else "-"
        test = arm.get(f"against_{control}")
        versus = ""
        if test and test["difference"] is not None:
            p_value = f"p={test['p_value']:.2g}" if test["p_value"] is not None else "p=-"
            verdict = "significant" if test["significant"] else "not significant"
            versus = f"{test['difference']:+.4f} ({p_value}, {verdict} at 5%)"
        lines.append(f"{arm['arm']:<10} {arm['target']:<9} {arm['watches']:>8} {arm['hits']:>7} {rate:>9} {ci:>17}  "
                     f"{versus}")
    return "\n".join(lines)
