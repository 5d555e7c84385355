"""nextwatch rules: the deployment's recommendation rules (service/rules.py), as PUT /admin/rules
sets them.

    nextwatch rules                                show them
    nextwatch rules set FILE                       replace them with a JSON file
    nextwatch rules block ID ... | unblock ID ...  the blocklist
    nextwatch rules boost ID WEIGHT | unboost ID   boosts (standard deviations of a user's scores)
    nextwatch rules continue-watching on|off       the next episode first
"""

import json
import sys

from .options import add_redis_option, run_on_store


def add_parser(subparsers):
    parser = subparsers.add_parser("rules", help="show or change the recommendation rules (blocklist, boosts, "
                                                 "continue watching)",
                                   description="The deployment's rules, applied on every answer and in "
                                               "`nextwatch evaluate --rules FILE`. Without an action: show them.")
    add_redis_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    replace = actions.add_parser("set", help="replace the rules with a JSON file ({blocklist, boosts, "
                                             "continue_watching})")
    replace.add_argument("file")
    for name, text in (("block", "never recommend these titles"), ("unblock", "take titles off the blocklist")):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", nargs="+", metavar="ID")
    boost = actions.add_parser("boost", help="lift (or, negative, lower) a title by WEIGHT standard deviations")
    boost.add_argument("id")
    boost.add_argument("weight", type=float)
    unboost = actions.add_parser("unboost", help="take a title's boost away")
    unboost.add_argument("id")
    cw = actions.add_parser("continue-watching", help="put the next episode of the series watched last first")
    cw.add_argument("state", choices=("on", "off"))
    for action in actions.choices.values():
        add_redis_option(action)
    return parser


def run(args) -> int:
    return run_on_store(args, "rules", lambda store, settings: _run(args, store))


def _run(args, store) -> int:
    from ..service.rules import RuleBook

    book = RuleBook(store)
    try:
        if args.action is None:
            print(json.dumps(book.stored().to_json(), indent=2, sort_keys=True))
            return 0
        document = book.stored().to_json()
        if args.action == "set":
            with open(args.file, encoding="utf-8") as f:
                given = json.load(f)
            if not isinstance(given, dict):
                print(f"nextwatch rules: {args.file} must hold a JSON object", file=sys.stderr)
                return 2
            document = {**given, "version": document["version"]}
        elif args.action == "block":
            document["blocklist"] = sorted(set(document["blocklist"]) | set(args.ids))
        elif args.action == "unblock":
            document["blocklist"] = sorted(set(document["blocklist"]) - set(args.ids))
        elif args.action == "boost":
            document["boosts"] = [b for b in document["boosts"] if b["content_id"] != args.id] + [
                {"content_id": args.id, "weight": args.weight}]
        elif args.action == "unboost":
            document["boosts"] = [b for b in document["boosts"] if b["content_id"] != args.id]
        else:
            document["continue_watching"] = args.state == "on"
        rules = book.replace(document)
        print(f"rules version {rules.version}: {len(rules.blocklist)} blocked, {len(rules.boosts)} boosted, "
              f"continue watching {'on' if rules.continue_watching else 'off'}; serving applies them within a few "
              "seconds")
        return 0
    except (OSError, ValueError) as problem:
        print(f"nextwatch rules: {problem}", file=sys.stderr)
        return 2
