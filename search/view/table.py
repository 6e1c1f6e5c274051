"""Plain-text tables for the terminal."""
from __future__ import annotations

import re
from typing import Sequence

_NUMBER = re.compile(r"^[+-]?[\d,]+(\.\d+)?%?$")


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals; "-" where there is no figure."""
    return "-" if x is None else f"{100 * x:.2f}%"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, w in zip(cells, widths):
            cell = str(cell)
            out.append(cell.rjust(w) if _NUMBER.match(cell) else cell.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
