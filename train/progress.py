"""Progress bars for long work (rich, which typer already brings), silent when not on a terminal."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yield a callable that advances the bar by one step; ``enabled=False`` (ranks other than 0) shows nothing."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, disable=not (enabled and sys.stderr.isatty())) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
