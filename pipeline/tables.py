"""The one plain-text table formatter of the console output (preflight, classifier summary,
backtest, run summary): a header, a rule, aligned columns; long cells wrap onto continuation
lines."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from typing import Any


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    max_width: int = 64,
    right: Sequence[int] = (),
) -> str:
    """A plain-text table with a header rule; long cells wrap onto continuation lines.

    ``right`` lists the column indices aligned to the right (numbers).
    """
    wrapped = [
        [
            textwrap.wrap(
                " ".join(str(c).split()), max_width, break_on_hyphens=False, break_long_words=False
            )
            or [""]
            for c in row
        ]
        for row in rows
    ]
    widths = [len(h) for h in headers]
    for row in wrapped:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(part) for part in cell))
    right_set = set(right)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right_set else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    for row in wrapped:
        height = max(len(cell) for cell in row)
        for k in range(height):
            out.append(line([cell[k] if k < len(cell) else "" for cell in row]))
    return "\n".join(out)
