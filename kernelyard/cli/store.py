"""``kernelyard store rotate-key|drop-old-keys|re-encrypt|status``: the store's keys.

The commands open the same store as the server (``--config FILE`` or
``--store-url``, as ``kernelyard token`` does) and work while gateways run on
it. They name keys by their key id (a one-way fingerprint) and never print or
log a key. docs/store.md has the rotation procedure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import ConfigError
from ..store import StoreFactory, rotation
from .token import add_store_options, open_factory


def _keys_line(factory: StoreFactory, key_ids: list[str]) -> str:
    path = factory.key_path()
    where = f"StoreFactory.key_file {path}" if path else "KERNELYARD_STORE_KEY"
    return f"Keys in {where}, newest first: {', '.join(key_ids)}"


def rotate_key_cmd(factory: StoreFactory) -> int:
    done = rotation.rotate_key(factory)
    new, old = done.key_ids[0], done.key_ids[1:]
    print(f"New store key {new}, first in StoreFactory.key_file {factory.key_path()}, now "
          f"seals every secret; kept for reading: {', '.join(old)}.")
    print(f"Re-encrypted the secrets of {done.kernels} kernel(s) and {done.store_secrets} "
          "store secret(s) under it.")
    print("Running gateways on this key file re-read it on their next store access (their "
          f"log names key {new}). Once every gateway has the new key file, run: "
          "kernelyard store drop-old-keys")
    return 0


def drop_old_keys_cmd(factory: StoreFactory) -> int:
    done = rotation.drop_old_keys(factory)
    print(f"Re-encrypted the secrets of {done.kernels} kernel(s) and {done.store_secrets} "
          f"store secret(s) under key {done.key_ids[0]}.")
    if done.dropped:
        print(f"Dropped {len(done.dropped)} old key(s): {', '.join(done.dropped)}.")
    else:
        print("No old key to drop.")
    print(_keys_line(factory, done.key_ids))
    return 0


def re_encrypt_cmd(factory: StoreFactory) -> int:
    done = rotation.re_encrypt(factory)
    print(f"Re-encrypted the secrets of {done.kernels} kernel(s) and {done.store_secrets} "
          f"store secret(s) under key {done.key_ids[0]}.")
    print(_keys_line(factory, done.key_ids))
    if len(done.key_ids) > 1:
        print("The older keys now seal nothing: remove them once every gateway runs with "
              "the new one first.")
    return 0


def status_cmd(factory: StoreFactory) -> int:
    found = rotation.census(factory)
    print(f"Store: {factory.sqlite_path()}")
    print(_keys_line(factory, found.key_ids))
    for n, (kid, count) in enumerate(zip(found.key_ids, found.counts, strict=True)):
        role = "seals new secrets" if n == 0 else "read only"
        print(f"  {kid}  {role:<17}  opens {count} sealed value(s)")
    if found.unreadable:
        print(f"  no key opens {len(found.unreadable)} value(s): "
              f"{', '.join(found.unreadable)}")
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kernelyard store", description=__doc__.split("\n")[0])
    add_store_options(top)
    sub = top.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[StoreFactory], int], str]] = {
        "rotate-key": (rotate_key_cmd, "put a new key first in StoreFactory.key_file and "
                       "re-encrypt every secret under it; the old key stays for reading"),
        "drop-old-keys": (drop_old_keys_cmd, "re-encrypt under the newest key, check it "
                          "opens everything, and remove the older keys from the key file"),
        "re-encrypt": (re_encrypt_cmd, "re-encrypt every secret under the newest key "
                       "(for keys set in KERNELYARD_STORE_KEY)"),
        "status": (status_cmd, "show the key ids and how many secrets each one seals"),
    }
    for name, (run, text) in commands.items():
        sub.add_parser(name, help=text, description=text).set_defaults(run=run)
    return top


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    factory: StoreFactory | None = None
    try:
        factory = open_factory(opts)
        return int(opts.run(factory))
    except ConfigError as e:
        print(f"kernelyard store {opts.command}: {e.message}", file=sys.stderr)
        return 1
    finally:
        if factory is not None:
            factory.close_blocking()
