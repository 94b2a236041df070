"""What every experiment shares: named settings, reports as JSON written atomically, and
Markdown tables of the results."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import ClassVar

from ..core.files import atomic_write


class NamedSettings:
    """Mixin for an experiment's frozen config dataclass: ``Config.named("classroom", **overrides)``
    calls the classmethod of that name; ``SETTINGS`` lists them."""

    SETTINGS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def named(cls, setting: str, **overrides):
        if setting not in cls.SETTINGS:
            raise ValueError(f"Unknown setting {setting!r}: choose one of {', '.join(cls.SETTINGS)}.")
        return getattr(cls, setting)(**overrides)

    @classmethod
    def classroom(cls, **overrides):
        return replace(cls(), **overrides)


def jsonable(cfg) -> dict:
    """A config dataclass as plain JSON values."""
    return json.loads(json.dumps(asdict(cfg)))


def write_report(report: dict, path: str | Path) -> Path:
    """Write ``report`` as indented JSON, atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))


def format_table(rows: dict[str, dict[str, float]], paper: dict | None = None, row_label: str = "task") -> str:
    """A Markdown table: one row per key of ``rows``, one column per inner key; where ``paper``
    has a value for (row, column) it is shown in brackets."""
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))

    def cell(row: str, column: str) -> str:
        value = rows[row].get(column)
        text = f"{value:.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value or "")
        ref = (paper or {}).get(row, {}).get(column)
        return text + (f" (paper {ref:.1f})" if ref is not None else "")

    table = [[row_label, *columns]] + [[row, *(cell(row, c) for c in columns)] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
             for r in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
