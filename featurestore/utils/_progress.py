"""Progress on long work: a callback for library code, rendered with rich on stderr for people."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressCallback = Callable[[int, int | None], None]  # (rows_done, rows_total or None)


def progress_enabled(progress: bool | None) -> bool:
    """``None`` means: on when stderr is a terminal (a stream without ``isatty``, e.g. a notebook's, counts as not)."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty()) if callable(isatty) else False
    return bool(progress)


@contextmanager
def rich_progress(description: str, total: int | None, *, enabled: bool, unit: str = "rows") -> Iterator[ProgressCallback]:
    """Yield an ``on_progress(done, total)`` callback that drives a rich bar (rows, rows/s, ETA) on stderr."""
    if not enabled:
        yield lambda done, total=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task):  # rows/s from rich's own speed estimate
            from rich.text import Text
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               _Rate(""), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            if new_total is not None:
                bar.update(task, total=new_total)
            bar.update(task, completed=done)

        yield update
