"""nextwatch keys: create, list and revoke the API keys that writes and admin routes need.

Only a key's SHA-256 is stored; `add` prints the key once, on stdout alone (for scripts), and
it cannot be shown again. Serving processes pick up a change within NEXTWATCH_API_KEYS_REFRESH
seconds, without a restart.
"""

import sys
import time

from ..settings import load_settings
from .options import add_redis_option

ROLES = ("write", "admin")  # service.access.ROLES; repeated so `nextwatch --help` imports no store


def add_parser(subparsers):
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys",
                                   description="Manage the API keys that POST /watched (role write or admin) "
                                               "and /admin/* (role admin) need once any key exists.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a key and print it (shown only this once)")
    add.add_argument("name", help="a unique name, 1-64 characters from [A-Za-z0-9_.-]")
    add.add_argument("--role", choices=ROLES, required=True, help="write: POST /watched; admin: also /admin/*")
    actions.add_parser("list", help="names, roles and creation times (never the keys)")
    revoke = actions.add_parser("revoke", help="delete a key; serving stops accepting it within the refresh interval")
    revoke.add_argument("name")
    for action in actions.choices.values():
        add_redis_option(action)
    return parser


def run(args) -> int:
    settings = load_settings(redis_url=args.redis_url)
    from ..service import access
    from ..errors import NextwatchError
    from ..store import Store

    store = Store.from_settings(settings)
    try:
        if args.action == "add":
            key = access.issue_key(store, args.name, args.role)
            print(f"API key {args.name!r} (role {args.role}) created. It is shown only this once; keep it "
                  "secret. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.", file=sys.stderr)
            print(key, flush=True)
        elif args.action == "list":
            _list(store)
        else:
            access.validate_key_name(args.name)
            if not store.api_keys.revoke(args.name):
                print(f"nextwatch keys: no API key is named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked API key {args.name!r}; serving processes refuse it within "
                  f"{settings.api_keys_refresh_seconds:g} s (NEXTWATCH_API_KEYS_REFRESH)")
        return 0
    except NextwatchError as problem:
        print(f"nextwatch keys: {problem.detail}", file=sys.stderr)
        return 2 if problem.status == 400 else 1
    finally:
        store.close()


def _list(store) -> None:
    records = store.api_keys.records()
    if not records:
        print("no API keys are configured: POST /watched and /admin/* are open")
        return
    print(f"{'NAME':<24} {'ROLE':<6} {'CREATED (UTC)':<20} FINGERPRINT")
    for record in records:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created_at))
        # Eight hex digits of the hash tell keys apart in logs of `keys add`; never the whole hash.
        print(f"{record.name:<24} {record.role:<6} {created:<20} sha256:{record.digest[:8]}")
