"""What the operator commands print: tables and panels for people, one JSON document for scripts,
progress on stderr, and the exit codes every command shares."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed, was aborted or timed out
EXIT_USAGE = 2  # a bad option, or nothing by that name (typer's own usage errors exit 2 too)

# A pipe gets whole rows (no folding at 80 columns), so grep and less see one row per line.
PIPE_WIDTH = 240
TRUNCATE = 60


class Output(StrEnum):
    text = "text"
    json = "json"


OUTPUT_HELP = "text: tables and panels for people; json: one JSON document on stdout, for scripts."
PROGRESS_HELP = "Show progress on stderr while waiting. Default: only when stderr is a terminal and --output is text."


def output_option() -> Any:
    return typer.Option(Output.text, "--output", help=OUTPUT_HELP, case_sensitive=False)


def progress_option() -> Any:
    return typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP, show_default=False)


def exit_after(main: Coroutine[Any, Any, None]) -> NoReturn:
    """Run a command that holds a Temporal client, then leave without interpreter finalization.

    The SDK's native threads can abort a finalizing interpreter while a client is alive
    (``PyGILState_Release``), which would turn a clean exit into a crash.
    """
    try:
        asyncio.run(main)
        code = EXIT_OK
    except typer.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - reported, then the same exit as any crash
        traceback.print_exc()
        code = EXIT_FAILED
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def out() -> Console:
    """The console of stdout: highlighting off (values are data), wide when it is not a terminal."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def err() -> Console:
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, highlight=False, width=PIPE_WIDTH)
    return console


def table(*columns: str, wrap: tuple[str, ...] = ()) -> Table:
    """A table of rows for people: a rule under the header, no vertical lines, so a row greps as words."""
    shown = Table(box=box.SIMPLE, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        shown.add_column(column, no_wrap=column not in wrap, overflow="fold")
    return shown


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Say what went wrong on stderr and leave with ``code``."""
    err().print(Text(message), soft_wrap=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    err().print(Text(message, style="dim"), soft_wrap=True)


def truncate(value: str | None, width: int = TRUNCATE) -> str:
    if not value:
        return ""
    line = " ".join(value.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago`` — how long ago ``when`` was."""
    if when is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def clock(when: datetime | None) -> str:
    """A timestamp for a table: UTC, to the second."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if when else ""


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


class Activity:
    """A running operation's line on stderr: what it does now and, with a total, how far it is."""

    def __init__(self, progress: Progress | None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def say(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def total(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total, completed=0)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


@contextmanager
def progress(description: str, *, output: Output, force: bool | None, counted: bool = False) -> Iterator[Activity]:
    """A spinner (``counted``: a bar) on stderr, gone when the operation ends.

    Shown when stderr is a terminal and the output is text, or when ``--progress`` forces it;
    stdout gets nothing of it, so JSON stays clean either way.
    """
    console = Console(stderr=True, highlight=False, force_terminal=True if force else None)
    shown = force if force is not None else (output is Output.text and console.is_terminal)
    if not shown:
        yield Activity(None)
        return
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if counted:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        yield Activity(bar, bar.add_task(description, total=None))
