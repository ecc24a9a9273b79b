"""Progress bars without global state: long-running functions take an optional rich ``Progress`` and
add their own task to it, so nested work (epochs inside pruning iterations) shares one live display."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")


def make_progress(*, transient: bool = True) -> Progress:
    """The one progress display the CLI opens for a run."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=transient,
    )


def tracked(
    iterable: Iterable[T], progress: Progress | None, description: str, total: int | None = None
) -> Iterator[T]:
    """Yield from ``iterable``, advancing a task on ``progress`` when one is given; the task is removed
    afterwards so finished inner loops do not pile up."""
    if progress is None:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    task = progress.add_task(description, total=total)
    try:
        for item in iterable:
            yield item
            progress.advance(task)
    finally:
        progress.remove_task(task)
