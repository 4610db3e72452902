"""One table formatter for every table the package prints or writes.

A :class:`Table` is a header and rows of cells; :meth:`Table.text` renders fixed-width columns
for a terminal (a run's per-client table), :meth:`Table.markdown` a Markdown table (a
comparison's ``table.md``).  :func:`percent` formats every metric value the same way in both.
Pure Python; metric values are fractions (0.5 means 50 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence


def percent(value: Optional[float], std: Optional[float] = None, *, signed: bool = False) -> str:
    """``0.5`` -> ``"50.0"``; with ``std`` -> ``"50.0 ± 1.2"``; None or NaN -> ``"-"`` (a NaN std is left out)."""
    if value is None or math.isnan(value):
        return "-"
    text = f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    if std is not None and not math.isnan(std):
        text += f" ± {100 * std:.1f}"
    return text


@dataclass(frozen=True)
class Column:
    """A column: its title, its width in the text rendering and whether it is left-aligned."""

    title: str
    width: int = 6
    left: bool = False


@dataclass
class Table:
    """Rows of string cells under :class:`Column` titles; ``None`` as a row draws a rule (text only)."""

    columns: Sequence[Column]
    rows: List[Optional[Sequence[str]]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row needs {len(self.columns)} cells, got {len(cells)}")
        self.rows.append([str(c) for c in cells])

    def rule(self) -> None:
        self.rows.append(None)

    def _text_line(self, cells: Sequence[str]) -> str:
        line = " ".join(f"{c:<{col.width}}" if col.left else f"{c:>{col.width}}" for col, c in zip(self.columns, cells))
        return line.rstrip()

    def text(self) -> str:
        """Fixed-width columns, a rule under the header and wherever :meth:`rule` was called."""
        header = self._text_line([c.title for c in self.columns])
        lines = [header, "-" * len(header)]
        lines += ["-" * len(header) if row is None else self._text_line(row) for row in self.rows]
        return "\n".join(lines)

    def markdown(self) -> str:
        """A Markdown table (left-aligned columns stay left, the others are right-aligned)."""
        lines = ["| " + " | ".join(c.title for c in self.columns) + " |",
                 "|" + "|".join(":---" if c.left else "---:" for c in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows if row is not None]
        return "\n".join(lines)
