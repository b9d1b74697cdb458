"""``cargo-distbuild`` entry point.

Cargo runs a subcommand ``cargo distbuild X`` as ``cargo-distbuild distbuild X``; the leading
``distbuild`` is dropped. With no command at all, the interactive REPL starts.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its parsers and sets ``func``; a command returns its exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from distbuild import __version__
from distbuild.cli.build import CARGO_COMMANDS, split_cargo_args
from distbuild.errors import DistbuildError

# Command modules, in help order. Each exposes register(subparsers).
COMMAND_MODULES = (
    "distbuild.cli.build",
    "distbuild.cli.stats",
    "distbuild.cli.cas",
    "distbuild.cli.master",
    "distbuild.cli.job",
    "distbuild.cli.scheduler",
    "distbuild.cli.worker",
    "distbuild.cli.repl",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cargo-distbuild",
        description="Distributed compilation and content-addressed caching for Rust. "
        "Run with no command for an interactive shell.",
    )
    parser.add_argument("--version", action="version", version=f"cargo-distbuild {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["distbuild"]:
        args_list = args_list[1:]
    if not args_list:
        try:
            from distbuild.cli.repl import run_repl
        except ImportError:
            build_parser().print_help()
            return EXIT_USAGE
        return run_repl()
    parser = build_parser()
    cargo_args = None
    command_at = next((i for i, a in enumerate(args_list) if not a.startswith("-")), None)
    if command_at is not None and args_list[command_at] in CARGO_COMMANDS:
        # Cargo's arguments never go through argparse (see distbuild/cli/build.py).
        ours, cargo_args = split_cargo_args(args_list[command_at + 1:])
        args_list = [*args_list[:command_at + 1], *ours]
    args, extra = parser.parse_known_args(args_list)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra if cargo_args is None else cargo_args
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        # The reader went away (`cas list --json | head`): stop quietly, as if killed by
        # SIGPIPE, and keep the interpreter from complaining when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except DistbuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:  # a file that is missing, a directory, no permission...
        logging.getLogger(__name__).debug("failed", exc_info=True)
        what = f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)
        print(f"error: {what}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
