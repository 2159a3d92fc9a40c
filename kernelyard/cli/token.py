"""``kernelyard token issue|list|revoke``: per-user API tokens.

The commands open the same store as the server: the one ``StoreFactory.url``
names in the gateway's config file (``--config FILE``, else the Jupyter config
path), or ``--store-url``. ``issue`` prints the token, and only the token, on
stdout, once; everything else goes to stderr. No command ever shows a secret
again: the store does not have it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..auth.api_tokens import issue
from ..errors import ConfigError
from ..identity import is_valid_username
from ..store import StoreFactory
from ..store.tokens import TokenRecord, TokenStore

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``45m``, ``90s`` or ``2w``; ValueError otherwise."""
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 45m, 90s or 2w")
    return float(int(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def parse_names(text: str) -> list[str]:
    """A comma-separated list of user or group names (empty items ignored)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        check_name(name)
    return names


def check_name(name: str) -> str:
    """``name`` if it is a user or group name (the rule the launch policy applies)."""
    if not is_valid_username(name):
        raise ValueError(f"{name!r} is not a name of at most 32 letters, digits, '_', '.' "
                         "and '-' (not starting with a digit, '.' or '-')")
    return name


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` whose ValueError message is shown as the usage error."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--store-url``: how a CLI finds the gateway's store (see open_factory)."""
    parser.add_argument("--config", default="", help="the gateway's config file "
                        "(default: kernelyard_config.py in the Jupyter config path)")
    parser.add_argument("--store-url", default="", help="the store, as StoreFactory.url "
                        "(default: from the config)")


def open_factory(opts: argparse.Namespace) -> StoreFactory:
    """A StoreFactory configured as the server's: its config file, then ``--store-url``."""
    from ..app import KernelyardApp

    app = KernelyardApp()
    app.config_file = opts.config or ""
    app.load_config_file()
    if opts.store_url:
        app.config.StoreFactory.url = opts.store_url
    return StoreFactory(config=app.config)


def _when(stamp: float | None, never: str = "never") -> str:
    if stamp is None:
        return never
    return datetime.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="minutes")


def describe(record: TokenRecord, now: float) -> dict[str, Any]:
    """What ``list`` shows of a record: everything but its hash."""
    return {"id": record.token_id, "user": record.username, "groups": list(record.groups),
            "admin": record.admin, "created": record.created, "expires": record.expires,
            "revoked": record.revoked, "status": record.status(now)}


def table(records: list[TokenRecord], now: float) -> list[str]:
    """The rows ``list`` prints, header first, columns aligned."""
    rows = [("ID", "USER", "GROUPS", "ADMIN", "CREATED", "EXPIRES", "STATUS")]
    for r in records:
        rows.append((r.token_id, r.username, ",".join(r.groups) or "-",
                     "yes" if r.admin else "no", _when(r.created), _when(r.expires),
                     r.status(now)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


async def issue_cmd(tokens: TokenStore, pepper: bytes, opts: argparse.Namespace) -> int:
    issued = await issue(tokens, pepper, opts.user, groups=opts.groups, admin=opts.admin,
                         expires_in=opts.expires_in)
    print(issued.text)
    record = issued.record
    print(f"Issued API token {record.token_id} for {record.username} (expires: "
          f"{_when(record.expires)}). It is shown only this once.", file=sys.stderr)
    return 0


async def list_cmd(tokens: TokenStore, pepper: bytes, opts: argparse.Namespace) -> int:
    records, now = await tokens.all(), time.time()
    if opts.json:
        print(json.dumps([describe(r, now) for r in records], indent=2))
    else:
        print("\n".join(table(records, now)))
    return 0


async def revoke_cmd(tokens: TokenStore, pepper: bytes, opts: argparse.Namespace) -> int:
    now = time.time()
    if _TOKEN_ID.fullmatch(opts.target) and await tokens.get(opts.target):
        revoked = [opts.target] if await tokens.revoke(opts.target, now) else []
    else:
        revoked = await tokens.revoke_user(opts.target, now)
    if not revoked:
        print(f"no active token has the id or user {opts.target!r}", file=sys.stderr)
        return 1
    print(f"Revoked: {', '.join(revoked)}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kernelyard token", description=__doc__.split("\n")[0])
    add_store_options(top)
    sub = top.add_subparsers(dest="command", required=True)
    iss = sub.add_parser("issue", help="issue a token and print it (only it) on stdout, once")
    iss.add_argument("user", type=_argtype(check_name), help="the user the token stands for")
    iss.add_argument("--groups", type=_argtype(parse_names), default=[],
                     help="comma-separated groups of the user")
    iss.add_argument("--admin", action="store_true", help="the user is a gateway admin")
    iss.add_argument("--expires-in", type=_argtype(parse_duration), default=None,
                     help="lifetime, like 30d, 12h, 45m or 2w (default: no expiry)")
    iss.set_defaults(run=issue_cmd)
    lst = sub.add_parser("list", help="list tokens (ids, users, status; never secrets)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=list_cmd)
    rev = sub.add_parser("revoke", help="revoke one token by id, or every token of a user")
    rev.add_argument("target", help="a token id, or a user name")
    rev.set_defaults(run=revoke_cmd)
    return top


Command = Callable[[TokenStore, bytes, argparse.Namespace], Coroutine[Any, Any, int]]


async def _run(command: Command, tokens: TokenStore, pepper: bytes,
               opts: argparse.Namespace) -> int:
    try:
        return await command(tokens, pepper, opts)
    finally:
        await tokens.close()


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    try:
        factory = open_factory(opts)
        tokens = factory.tokens  # opens the database: before the event loop, not in it
        pepper = factory.token_pepper() if opts.command == "issue" else b""
    except ConfigError as e:
        print(f"kernelyard token: {e.message}", file=sys.stderr)
        return 1
    return asyncio.run(_run(opts.run, tokens, pepper, opts))
