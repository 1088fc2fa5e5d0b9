"""The fleet's status on a terminal: a table refreshed in place, or plain lines.

On a terminal, `show_status` draws a rich ``Live`` table and redraws it a few times a second;
log records scroll above it. Anywhere else (a pipe, a file, a service manager's journal) it
prints the same rows as plain lines every few seconds, which read well in a log. Both, and
``galaxy-actors status``, show the same `COLUMNS`, and everything in one redraw (title,
table, footer) is read from the supervisor at one moment. rich is imported only when the
live view is used, so the library and the plain view work without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TextIO

import trio

from .._actors._supervisor import Supervisor
from ._report import DeviceRow, device_rows

if TYPE_CHECKING:
    from rich.table import Table

#: A line under the table, made from the rows the table shows (one snapshot).
Footer = Callable[[Sequence[DeviceRow]], str]

__all__ = ["COLUMNS", "VIEW_MODES", "choose_view", "format_rows", "show_status", "summary_line"]

#: What ``--view`` accepts: auto picks live on a terminal (when rich is installed), else plain.
VIEW_MODES: Final = ("auto", "live", "plain", "none")
_STATUS_STYLES: Final = {
    "idle": "green",
    "busy": "cyan",
    "connected": "green",
    "connecting": "yellow",
    "failed": "bold red",
    "disconnected": "dim",
}


def choose_view(requested: str, stream: TextIO) -> str:
    """Resolve ``auto``: ``live`` if ``stream`` is a terminal and rich is installed, else
    ``plain``. ``live`` without rich is ``plain`` too; other modes stay as they are."""
    has_rich = importlib.util.find_spec("rich") is not None
    if requested == "auto":
        return "live" if stream.isatty() and has_rich else "plain"
    return "plain" if requested == "live" and not has_rich else requested


#: The columns of every status view (live table, plain lines, ``galaxy-actors status``):
#: a name and how its cells are aligned.
COLUMNS: Final = (
    ("DEVICE", "left"),
    ("STATUS", "left"),
    ("QUEUE", "right"),
    ("RETRIES", "right"),
    ("RETRY IN", "right"),
    ("SEEN", "right"),
    ("DONE", "right"),
    ("FAILED", "right"),
    ("REASON", "left"),
)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _retries(row: DeviceRow) -> str:
    text = f"{row.attempts}/{row.max_retries}"
    return f"{text} gave up" if row.gave_up else text


def _cells(row: DeviceRow) -> tuple[str, ...]:
    """One row's cells, in `COLUMNS` order."""
    return (
        row.device_id,
        row.status,
        str(row.queue_depth),
        _retries(row),
        _seconds(row.next_retry_in),
        _seconds(row.last_heartbeat_age),
        str(row.tasks_done),
        str(row.tasks_failed),
        row.last_failure or "",
    )


def summary_line(rows: Sequence[DeviceRow]) -> str:
    """``8 devices: 6 idle, 1 busy, 1 failed; tasks 120 done, 3 failed``: the task counts
    are the table's DONE and FAILED columns summed."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    done = sum(r.tasks_done for r in rows)
    failed = sum(r.tasks_failed for r in rows)
    return f"{len(rows)} devices: {statuses or 'none'}; tasks {done} done, {failed} failed"


def format_rows(rows: Sequence[DeviceRow]) -> list[str]:
    """The rows as aligned plain-text lines, a header first (the last column, the reason
    of the last failure, is not padded: it may be long)."""
    table = [tuple(name for name, _ in COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS) - 1)]
    lines = []
    for cells in table:
        padded = [
            cell.rjust(w) if justify == "right" else cell.ljust(w)
            for cell, w, (_, justify) in zip(cells, widths, COLUMNS, strict=False)
        ]
        lines.append("  ".join([*padded, cells[-1]]).rstrip())
    return lines


def _rich_table(rows: Sequence[DeviceRow], title: str, caption: str) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # One line per device, as wide as the terminal: a wrapped table redraws badly. The
    # other columns keep their width; the reason gets what they leave and is cut short. Its
    # whole text is in the log lines scrolling above, and in `galaxy-actors status`.
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        show_edge=False,
        expand=True,
    )
    for name, justify in COLUMNS:
        reason = name == "REASON"
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
            ratio=1 if reason else None,
        )
    for r in rows:
        cells: list[str | Text] = list(_cells(r))
        cells[1] = Text(r.status, style=_STATUS_STYLES.get(r.status, ""))
        cells[3] = Text(_retries(r), style="bold red" if r.gave_up else "")
        table.add_row(*cells)
    return table


async def show_status(
    supervisor: Supervisor,
    mode: str,
    out: TextIO,
    *,
    interval: float | None = None,
    title: str = "galaxy_actors",
    footer: Footer | None = None,
) -> None:
    """Show the fleet's status on ``out`` until cancelled. ``mode`` is ``live``, ``plain``
    or ``none`` (see `choose_view`); ``interval`` defaults to 0.5 s live, 5 s plain.
    ``footer`` adds a line of the caller's (the demo's task counts), made from the same
    rows as the table, so that the two cannot disagree."""
    if mode == "none":
        await trio.sleep_forever()
    if mode == "live":
        await _show_live(supervisor, out, interval or 0.5, title, footer)
    else:
        await _show_plain(supervisor, out, interval or 5.0, title, footer)


async def _show_plain(
    supervisor: Supervisor,
    out: TextIO,
    interval: float,
    title: str,
    footer: Footer | None,
) -> None:
    start = trio.current_time()
    while True:
        await trio.sleep(interval)
        rows = device_rows(supervisor)
        elapsed = trio.current_time() - start
        lines = [f"[{elapsed:7.1f} s] {title}: {summary_line(rows)}"]
        lines += [f"  {line}" for line in format_rows(rows)]
        if footer is not None:
            lines.append(f"  {footer(rows)}")
        out.write("\n".join(lines) + "\n")
        out.flush()


async def _show_live(
    supervisor: Supervisor,
    out: TextIO,
    interval: float,
    title: str,
    footer: Footer | None,
) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out)

    def render() -> Table:
        rows = device_rows(supervisor)
        caption = summary_line(rows) + (f"\n{footer(rows)}" if footer is not None else "")
        return _rich_table(rows, title, caption)

    # No auto-refresh: rich would redraw from a thread of its own; the redraws come from
    # this task instead, on Trio's clock. stderr is redirected so log lines scroll above.
    with Live(render(), console=console, auto_refresh=False, redirect_stderr=True) as live:
        while True:
            await trio.sleep(interval)
            live.update(render(), refresh=True)
