"""nextwatch models: the published model versions; activate one, or roll back to the previous.

The same operations as GET /admin/models, POST /admin/models/<version>/activate and POST
/admin/models/rollback (service.py over store/models.py). Serving processes switch on their
next request; cached predictions of the old version are not served again.
"""

import json
import sys
import time

from ..settings import load_settings
from .options import add_redis_option


def add_parser(subparsers):
    parser = subparsers.add_parser("models", help="list published model versions, activate one, roll back",
                                   description="Inspect and switch the model version that serving uses.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="published versions with their metadata; * marks the current one")
    activate = actions.add_parser("activate", help="serve this published version")
    activate.add_argument("version", type=int)
    actions.add_parser("rollback", help="serve the newest version older than the current one")
    for action in actions.choices.values():
        add_redis_option(action)
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url)
    from ..errors import NextwatchError
    from ..service import build_services

    services = build_services(settings)
    service = services.admin
    try:
        if args.action == "list":
            _list(service.models())
        elif args.action == "activate":
            switched = service.activate_model(args.version)
            print(f"model version {switched['current']} is current (was {switched['previous']})")
        else:
            switched = service.rollback_model()
            print(f"rolled back: model version {switched['current']} is current (was {switched['previous']})")
        return 0
    except NextwatchError as problem:
        print(f"nextwatch models: {problem.detail}", file=sys.stderr)
        return 1
    finally:
        services.close()


def _list(registry: dict) -> None:
    if not registry["versions"]:
        print("no model is published yet (run `nextwatch train`)")
        return
    print(f"  {'VERSION':>7}  {'PUBLISHED (UTC)':<19}  DETAILS")
    for entry in registry["versions"]:
        meta = dict(entry["metadata"])
        published = meta.pop("published_at", None)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(published))) if published else "?"
        meta.pop("version", None)
        details = " ".join(f"{key}={_shown(value)}" for key, value in meta.items() if _listed(key))
        print(f"{'*' if entry['current'] else ' '} {entry['version']:>7}  {when:<19}  {details}")
        if meta.get("time_capped") == "1":
            print(f"{'':30}time cap reached: NEXTWATCH_TRAIN_MINUTES stopped the sequence model's training "
                  "before its holdout did")


def _shown(value: str) -> str:
    """A value as one word of the line: quoted when it has spaces (sequence_stopped_by="time cap")."""
    return json.dumps(value) if " " in value else value


def _listed(key: str) -> bool:
    """One line per version: the figures, not the JSON details (GET /admin/models has those)
    nor the sequence model's array layout."""
    return key not in ("params", "grid", "sequence_tuning") and not key.startswith("sequence.")
