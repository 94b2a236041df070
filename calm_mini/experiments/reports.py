"""What every experiment shares: named settings, reports as JSON written atomically (with the
config's hash, the kit's version and the seeds beside the numbers), several seeds' tables
summarised as mean, min and max, and Markdown tables of the results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from statistics import mean
from typing import ClassVar, Sequence

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


def config_hash(cfg) -> str:
    """12 hex digits of the sha256 of ``cfg``'s canonical JSON (keys sorted, no spaces): equal
    hashes mean equal settings. ``cfg`` is a config dataclass or its :func:`jsonable` dict."""
    values = cfg if isinstance(cfg, dict) else jsonable(cfg)
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def provenance(cfg, seeds: Sequence[int]) -> dict:
    """What a report stores beside its numbers: the config, its hash, the kit's version, the seeds."""
    from .. import __version__

    return {"config": jsonable(cfg), "config_hash": config_hash(cfg), "calm_mini_version": __version__,
            "seeds": list(seeds)}


def caption(report: dict) -> str:
    """``"classroom, seed 0, calm_mini 0.1.0"``: what a figure made from ``report`` says it shows."""
    seeds = report.get("seeds", [])
    which = (f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}" if seeds
             else "seed unknown")
    return f"{report.get('setting', '?')}, {which}, calm_mini {report.get('calm_mini_version', '?')}"


def spread(tables: Sequence[dict[str, dict]], columns: Sequence[str] | None = None) -> dict[str, dict[str, dict]]:
    """Several seeds' tables ``{row: {column: value}}`` as ``{row: {column: {"mean", "min", "max"}}}``
    (rounded to 0.1), over ``columns`` (default: every column of the first table)."""
    if not tables:
        raise ValueError("spread() needs at least one table.")
    first = tables[0]
    out: dict[str, dict[str, dict]] = {}
    for row, cells in first.items():
        out[row] = {}
        for column in columns or list(cells):
            values = [t[row][column] for t in tables]
            out[row][column] = {"mean": round(mean(values), 1), "min": min(values), "max": max(values)}
    return out


def mean_table(tables: Sequence[dict[str, dict]], columns: Sequence[str] | None = None) -> dict[str, dict]:
    """The first table with each cell of ``columns`` (default all) replaced by its mean over ``tables``."""
    means = spread(tables, columns)
    return {row: {**cells, **{c: means[row][c]["mean"] for c in means[row]}} for row, cells in tables[0].items()}


def range_cells(cells_range: dict[str, dict[str, dict]]) -> dict[str, dict[str, str]]:
    """A :func:`spread` as printable cells: ``"91.5 (88.0–93.5)"`` (mean, then min–max)."""
    return {row: {c: f"{r['mean']:.1f} ({r['min']:.1f}–{r['max']:.1f})" for c, r in cells.items()}
            for row, cells in cells_range.items()}


def against_range(table: dict[str, dict], committed: dict | None, column: str | None, this_hash: str) -> list[str]:
    """One line per cell of ``table`` (a single run) that ``committed`` (a multi-seed report's
    ``range``) covers: the value, the committed min–max, and ``inside`` or ``OUTSIDE``; only
    ``column``'s cells if given. A committed report of another config is said so, not compared."""
    if committed is None or "range" not in committed:
        return ["No committed multi-seed range to compare with (run the command with --seeds 5 to make one)."]
    if committed.get("config_hash") != this_hash:
        return [f"The committed {len(committed.get('seeds', []))}-seed range was made with another configuration "
                f"(config hash {committed.get('config_hash')}, this run {this_hash}): not compared."]
    n = len(committed["seeds"])
    lines = []
    for row, cells in table.items():
        for name, value in cells.items():
            r = committed["range"].get(row, {}).get(name)
            if r is None or (column is not None and name != column):
                continue
            verdict = "inside" if r["min"] <= value <= r["max"] else "OUTSIDE"
            lines.append(f"{row} · {name}: {value:.1f}  (committed {n}-seed range {r['min']:.1f}–{r['max']:.1f}, "
                         f"mean {r['mean']:.1f}): {verdict}")
    outside = sum(line.endswith("OUTSIDE") for line in lines)
    lines.append(f"{len(lines) - outside} of {len(lines)} cells inside the committed {n}-seed range"
                 + ("." if not outside else f"; {outside} OUTSIDE."))
    return lines


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
