"""A rich progress bar fed by the storage layer's ``Progress`` callback (symbol, done, total)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[str, int, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[symbol]}"),
        transient=False,
    ) as bar:
        task: Any = bar.add_task(label, total=None, symbol="")

        def report(symbol: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, symbol=symbol)

        yield report
