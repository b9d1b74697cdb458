"""The interactive shell: ``cargo-distbuild`` with no arguments.

Each REPL command maps onto the regular CLI (so both behave the same): ``cas put|get|list``,
``job submit|status``, ``jobs list``, ``workers list``, ``scheduler status``, ``help``,
``exit``. Errors are printed, never a traceback. prompt-toolkit gives history (kept in
``$DISTBUILD_HOME/repl_history``) and completion; when stdin is not a terminal the lines are
read plainly, which makes the shell scriptable (``printf 'cas list\\nexit\\n' | cargo-distbuild``).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable
from typing import Any

from distbuild.cli.render import console, err_console
from distbuild.config import load_config
from distbuild.errors import DistbuildError

HELP = [
    ("cas put FILE", "store a file in the CAS (the scheduler's when configured)"),
    ("cas get HASH OUTPUT", "write a blob to OUTPUT, verified"),
    ("cas list [--limit N]", "list blobs, most recently used first"),
    ("job submit ACTION_DIGEST [--wait]", "run an action already in the scheduler's CAS"),
    ("job submit --wasm MODULE ...", "run a Wasm task (see `job submit --help`)"),
    ("job status JOB_ID", "a job's state and result"),
    ("jobs list [--state S] [--limit N]", "the scheduler's jobs, newest first"),
    ("workers list", "the scheduler's workers and their load"),
    ("scheduler status", "queue, slots and CAS of the scheduler"),
    ("help", "this list"),
    ("exit", "leave (also quit or Ctrl-D)"),
]

COMPLETIONS: dict[str, Any] = {
    "cas": {"put": None, "get": None, "list": {"--limit": None, "--json": None}},
    "job": {"submit": {"--wait": None, "--json": None, "--wasm": None},
            "status": {"--json": None}},
    "jobs": {"list": {"--state": None, "--limit": None, "--json": None}},
    "workers": {"list": {"--json": None}},
    "scheduler": {"status": {"--json": None}},
    "help": None, "exit": None, "quit": None,
}


def translate(words: list[str]) -> list[str] | None:
    """REPL words -> CLI argv (None for an unknown command)."""
    head = words[:2]
    rest = words[2:]
    if head == ["jobs", "list"]:
        return ["master", "list-jobs", *rest]
    if head == ["workers", "list"]:
        return ["workers", "list", *rest]
    if head == ["job", "status"]:
        return ["master", "job-status", *rest]
    if head == ["job", "submit"]:
        if any(w == "--wasm" or w.startswith("--wasm=") for w in rest):
            return ["job", "submit", *rest]
        return ["master", "submit-job", *rest]
    if head == ["scheduler", "status"] or words[:1] == ["cas"]:
        return words
    return None


class Repl:
    def __init__(self) -> None:
        from distbuild.cli.main import build_parser

        self.parser = build_parser()

    def execute(self, line: str) -> bool:
        """Run one line; False when the shell should exit."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            err_console.print(f"[red]error:[/red] {e}")
            return True
        if not words:
            return True
        if words[0] in ("exit", "quit"):
            return False
        if words[0] in ("help", "?"):
            self.help()
            return True
        argv = translate(words)
        if argv is None:
            err_console.print(f"[red]unknown command:[/red] {' '.join(words[:2])} "
                              "(type help for the list)")
            return True
        try:
            args = self.parser.parse_args(argv)
            code = int(args.func(args) or 0)
            if code:
                err_console.print(f"[yellow]exit code {code}[/yellow]")
        except SystemExit:
            pass  # argparse already printed the usage error or the --help text
        except DistbuildError as e:
            err_console.print(f"[red]error:[/red] {e}")
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
        except Exception as e:  # noqa: BLE001 - the shell must survive anything
            err_console.print(f"[red]error:[/red] {type(e).__name__}: {e}")
        return True

    def help(self) -> None:
        from rich.table import Table

        table = Table(title="commands", title_justify="left", show_header=False, box=None)
        table.add_column(style="bold cyan")
        table.add_column()
        for cmd, what in HELP:
            table.add_row(cmd, what)
        console.print(table)

    def run_lines(self, lines: Iterable[str]) -> int:
        for line in lines:
            if not self.execute(line.rstrip("\n")):
                break
        return 0


def run_repl(input: Any = None, output: Any = None) -> int:
    """The interactive loop. ``input``/``output`` are prompt-toolkit objects (for tests)."""
    repl = Repl()
    if input is None and not sys.stdin.isatty():
        return repl.run_lines(sys.stdin)
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import NestedCompleter
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    try:
        cfg = load_config()
        cfg.home.mkdir(parents=True, exist_ok=True)
        history: Any = FileHistory(str(cfg.home / "repl_history"))
    except (DistbuildError, OSError):
        history = InMemoryHistory()
    session: PromptSession[str] = PromptSession(
        history=history, completer=NestedCompleter.from_nested_dict(COMPLETIONS),
        input=input, output=output)
    if input is None:
        console.print("[bold]cargo-distbuild[/bold] shell — type [cyan]help[/cyan] for commands")
    while True:
        try:
            line = session.prompt("distbuild> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if not repl.execute(line):
            return 0


def register(sub: Any) -> None:
    p = sub.add_parser("shell", help="the interactive shell (also: no command at all)")
    p.set_defaults(func=lambda args: run_repl())
