"""The ``kernelyard`` command: ``serve`` (the default) and the other subcommands."""

from __future__ import annotations

import sys

from .._version import __version__

USAGE = """usage: kernelyard [serve] [options]       start the gateway (see --help, --help-all)
       kernelyard generate-config [--output FILE] [--force]
       kernelyard kernelspec install BACKEND --name NAME [...] | kernelspec list
       kernelyard token issue USER [--groups G1,G2] [--admin] [--expires-in 30d]
       kernelyard token list | token revoke ID|USER
       kernelyard store rotate-key | drop-old-keys | re-encrypt | status
       kernelyard --version
"""


def main(argv: list[str] | None = None) -> None:
    """Run a subcommand; a plugin that cannot be loaded is a one-line error naming it."""
    from ..registry import EntryPointError

    try:
        _run(list(sys.argv[1:] if argv is None else argv))
    except EntryPointError as e:
        print(f"kernelyard: {e.message}", file=sys.stderr)
        sys.exit(1)


def _run(args: list[str]) -> None:
    if args[:1] == ["--version"]:
        print(__version__)
        return
    if args[:1] == ["generate-config"]:
        from .generate_config import generate_config

        sys.exit(generate_config(args[1:]))
    if args[:1] == ["kernelspec"]:
        from .kernelspec import main as kernelspec_main

        sys.exit(kernelspec_main(args[1:]))
    if args[:1] == ["token"]:
        from .token import main as token_main

        sys.exit(token_main(args[1:]))
    if args[:1] == ["store"]:
        from .store import main as store_main

        sys.exit(store_main(args[1:]))
    if args[:1] == ["serve"]:
        args = args[1:]
    elif args and not args[0].startswith("-"):
        print(f"kernelyard: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from ..app import launch

    launch(args)


if __name__ == "__main__":
    main()
