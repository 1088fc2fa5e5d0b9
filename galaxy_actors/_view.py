"""The fleet's status on a terminal: a table refreshed in place, or plain lines.

On a terminal, `show_status` draws a rich ``Live`` table (device, status, queue, retries, next
retry in, last heartbeat, tasks done/failed) and redraws it a few times a second; log records
scroll above it. Anywhere else (a pipe, a file, a service manager's journal) it prints the
same rows as plain lines every few seconds, which read well in a log. rich is imported only
when the live view is used, so the library and the plain view work without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TextIO

import trio

from ._report import DeviceRow, device_rows
from ._supervisor import Supervisor

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["VIEW_MODES", "choose_view", "format_rows", "show_status"]

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


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _retries(row: DeviceRow) -> str:
    text = f"{row.attempts}/{row.max_retries}"
    return f"{text} gave up" if row.gave_up else text


def summary_line(rows: Sequence[DeviceRow]) -> str:
    """``8 devices: 6 idle, 1 busy, 1 failed; tasks 120 done, 3 failed``."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    done = sum(r.tasks_done for r in rows)
    failed = sum(r.tasks_failed for r in rows)
    return f"{len(rows)} devices: {statuses or 'none'}; tasks {done} done, {failed} failed"


def format_rows(rows: Sequence[DeviceRow]) -> list[str]:
    """The rows as aligned plain-text lines, a header first."""
    table = [
        ("DEVICE", "STATUS", "QUEUE", "RETRIES", "NEXT RETRY", "HEARTBEAT", "DONE", "FAILED"),
        *(
            (
                r.device_id,
                r.status,
                str(r.queue_depth),
                _retries(r),
                _seconds(r.next_retry_in),
                _seconds(r.last_heartbeat_age),
                str(r.tasks_done),
                str(r.tasks_failed),
            )
            for r in rows
        ),
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = []
    for index, cells in enumerate(table):
        line = "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()
        row = rows[index - 1] if index else None
        if row is not None and row.status == "failed" and row.last_failure:
            line += f"  ({row.last_failure})"
        lines.append(line)
    return lines


def _rich_table(rows: Sequence[DeviceRow], title: str, footer: str | None) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # Narrow enough for an 80-column terminal: a wrapped table redraws badly. Failures are
    # in the log lines scrolling above it.
    table = Table(title=title, caption=footer, box=box.SIMPLE_HEAD, padding=(0, 1))
    for name, justify in (
        ("device", "left"),
        ("status", "left"),
        ("queue", "right"),
        ("retries", "right"),
        ("retry in", "right"),
        ("alive", "right"),
        ("done", "right"),
        ("failed", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r.device_id,
            Text(r.status, style=_STATUS_STYLES.get(r.status, "")),
            str(r.queue_depth),
            Text(_retries(r), style="bold red" if r.gave_up else ""),
            _seconds(r.next_retry_in),
            _seconds(r.last_heartbeat_age),
            str(r.tasks_done),
            str(r.tasks_failed),
        )
    return table


async def show_status(
    supervisor: Supervisor,
    mode: str,
    out: TextIO,
    *,
    interval: float | None = None,
    title: str = "galaxy_actors",
    footer: Callable[[], str] | None = None,
) -> None:
    """Show the fleet's status on ``out`` until cancelled. ``mode`` is ``live``, ``plain``
    or ``none`` (see `choose_view`); ``interval`` defaults to 0.5 s live, 5 s plain.
    ``footer`` adds a line of the caller's (the demo's task counts)."""
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
    footer: Callable[[], str] | None,
) -> None:
    start = trio.current_time()
    while True:
        await trio.sleep(interval)
        rows = device_rows(supervisor)
        elapsed = trio.current_time() - start
        lines = [f"[{elapsed:7.1f} s] {title}: {summary_line(rows)}"]
        lines += [f"  {line}" for line in format_rows(rows)]
        if footer is not None:
            lines.append(f"  {footer()}")
        out.write("\n".join(lines) + "\n")
        out.flush()


async def _show_live(
    supervisor: Supervisor,
    out: TextIO,
    interval: float,
    title: str,
    footer: Callable[[], str] | None,
) -> None:
    from rich.console import Console
    from rich.live import Live

    def render() -> Table:
        rows = device_rows(supervisor)
        caption = summary_line(rows) + (f"\n{footer()}" if footer is not None else "")
        return _rich_table(rows, title, caption)

    # No auto-refresh: rich would redraw from a thread of its own; the redraws come from
    # this task instead, on Trio's clock. stderr is redirected so log lines scroll above.
    with Live(
        render(), console=Console(file=out), auto_refresh=False, redirect_stderr=True
    ) as live:
        while True:
            await trio.sleep(interval)
            live.update(render(), refresh=True)
