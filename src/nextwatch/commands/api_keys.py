"""nextwatch keys: create, list and revoke the API keys that writes and admin routes need.

Only a key's SHA-256 is stored; `add` prints the key once, on stdout alone (for scripts), and
it cannot be shown again. `add --from-env VAR` or `--key-file PATH` stores a key its owner chose
(the compose stack's keys from .env) and prints nothing of it; run again with the same key it
changes nothing. Serving processes pick up a change within NEXTWATCH_API_KEYS_REFRESH seconds,
without a restart.
"""

import os
import sys
import time

from .options import add_redis_option, run_on_store

ROLES = ("write", "admin")  # service.access.ROLES; repeated so `nextwatch --help` imports no store


def add_parser(subparsers):
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys",
                                   description="Manage the API keys that POST /watched (role write or admin) "
                                               "and /admin/* (role admin) need once any key exists.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a key and print it (shown only this once), or store a given one")
    add.add_argument("name", help="a unique name, 1-64 characters from [A-Za-z0-9_.-]")
    add.add_argument("--role", choices=ROLES, required=True, help="write: POST /watched; admin: also /admin/*")
    given = add.add_mutually_exclusive_group()
    given.add_argument("--from-env", metavar="VAR",
                       help="store the key held by the environment variable VAR instead of making one; nothing "
                            "of it is printed, only its SHA-256 is stored")
    given.add_argument("--key-file", metavar="PATH",
                       help="the same, with the key read from a file ('-': standard input)")
    add.add_argument("--replace", action="store_true",
                     help="with --from-env or --key-file: if NAME holds another key, replace it (the old key "
                          "stops working)")
    actions.add_parser("list", help="names, roles and creation times (never the keys)")
    revoke = actions.add_parser("revoke", help="delete a key; serving stops accepting it within the refresh interval")
    revoke.add_argument("name")
    for action in actions.choices.values():
        add_redis_option(action)
    return parser


def run(args) -> int:
    return run_on_store(args, "keys", lambda store, settings: _run(args, store, settings))


def _run(args, store, settings) -> int:
    from ..service import access

    if args.action == "add" and (args.from_env or args.key_file):
        return _store_given(store, args)
    if args.action == "add":
        if args.replace:
            print("nextwatch keys: --replace needs --from-env or --key-file (a new key gets a new name; revoke "
                  "the old one once its clients have moved)", file=sys.stderr)
            return 2
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


class _NoKey(Exception):
    pass


def _given_key(args) -> str:
    # Not a setting (settings.py reads NEXTWATCH_* settings): a secret whose variable the caller names.
    if args.from_env:
        key = os.environ.get(args.from_env, "")
        if not key.strip():
            raise _NoKey(f"the environment variable {args.from_env} is not set or empty")
        return key.strip()
    try:
        if args.key_file == "-":
            key = sys.stdin.read()
        else:
            with open(args.key_file, encoding="utf-8") as file:
                key = file.read()
    except OSError as problem:
        raise _NoKey(f"cannot read the key from {args.key_file}: {problem.strerror or problem}") from None
    except UnicodeDecodeError:  # its message would quote a byte of the key
        raise _NoKey(f"{args.key_file} is not UTF-8 text") from None
    if not key.strip():
        raise _NoKey(f"{args.key_file} holds no key")
    return key.strip()


def _store_given(store, args) -> int:
    from ..errors import Conflict
    from ..service import access

    source = f"${args.from_env}" if args.from_env else "standard input" if args.key_file == "-" else args.key_file
    try:
        outcome = access.register_key(store, args.name, args.role, _given_key(args), replace=args.replace)
    except _NoKey as problem:
        print(f"nextwatch keys: {problem}", file=sys.stderr)
        return 2
    except Conflict as problem:
        hint = " (or give --replace)" if problem.error == "name_taken" else ""
        print(f"nextwatch keys: {problem.detail}{hint}", file=sys.stderr)
        return 1
    said = {"added": "stored", "unchanged": "already stored, unchanged",
            "replaced": "stored, replacing the key that name held (it no longer works)"}[outcome]
    print(f"API key {args.name!r} (role {args.role}) from {source}: {said}. Only its SHA-256 is kept.", flush=True)
    return 0


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
