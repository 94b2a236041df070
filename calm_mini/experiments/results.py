"""Which command writes each result report under ``assets/``, whether a committed report is
stale (written by another configuration than the code's default), and the small formatting
helpers that show a report's numbers (one seed, or mean (min–max) over several).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .reports import config_hash


# ---------------------------------------------------------------------- which command writes which report
def _kv_config(setting: str):
    from .kv import ExperimentConfig

    return ExperimentConfig.named(setting)


def _facts_config(setting: str):
    from .facts import FactsConfig

    return FactsConfig.named(setting)


def _keys_chars_config(setting: str):
    from .keys_chars import KeysCharsConfig

    return KeysCharsConfig.named(setting)


@dataclass(frozen=True)
class Source:
    """How a report under ``assets/`` is written: the command, how many seeds the committed file
    holds, whether the command takes ``--seeds`` (then one seed writes to ``runs/`` unless told
    ``--assets assets``), and the default config of a setting (``None`` for a benchmark: its
    figures depend on the machine that ran it, not on a config of the kit)."""

    command: str
    default_config: Callable[[str], object] | None
    seeds: int = 1
    takes_seeds: bool = False
    setting: str = "classroom"  # the setting of the committed file

    def command_for(self, setting: str, seeds: int | None = None) -> str:
        """The command line that writes this report for ``setting`` with ``seeds`` seeds (default:
        as many as the committed file should hold)."""
        if self.default_config is None:
            return self.command
        seeds = self.seeds if seeds is None else seeds
        line = self.command + ((f" --seeds {seeds}" if seeds > 1 else " --assets assets") if self.takes_seeds else "")
        return line + ("" if setting == "classroom" else f" --setting {setting}")


SOURCES = {
    "kv_results": Source("python -m calm_mini reproduce", _kv_config, seeds=5, takes_seeds=True),
    "kv_results_paper_cpu": Source("python -m calm_mini reproduce", _kv_config, takes_seeds=True, setting="paper_cpu"),
    "kv_ablations": Source("python -m calm_mini ablations", _kv_config, takes_seeds=True),
    "facts_results": Source("python -m calm_mini facts --threads 2", _facts_config),
    "keys_chars_results": Source("python -m calm_mini keys-chars", _keys_chars_config),
    "explorer_screenshot": Source("python tools/explorer_screenshot.py", _kv_config),
    "bench_hot_path_cpu": Source("python benchmarks/hot_path.py --json assets/bench_hot_path_cpu.json", None),
    "bench_cpu": Source("bash benchmarks/cpu.sh", None),
    "bench_data_path_cpu": Source("python benchmarks/data_path.py --threads 2 --json assets/bench_data_path_cpu.json", None),
}


def written_by(stem: str, report: dict) -> str:
    """The command line that wrote ``report`` (its setting and its number of seeds)."""
    return SOURCES[stem].command_for(report.get("setting", "classroom"), len(report.get("seeds") or [0]))


def load_reports(assets: str | Path = "assets") -> dict[str, dict]:
    """Every report of :data:`SOURCES` found in ``assets``, by file stem."""
    files = {stem: Path(assets) / f"{stem}.json" for stem in SOURCES}
    return {stem: json.loads(path.read_text()) for stem, path in files.items() if path.is_file()}


def stale_reports(reports: dict[str, dict]) -> dict[str, str]:
    """``{stem: why and the command that rewrites it}`` for each report without a ``config_hash``,
    with one that differs from the current default config of its setting, or with fewer seeds
    than the README shows."""
    stale = {}
    for stem, report in reports.items():
        source, setting = SOURCES[stem], report.get("setting", "classroom")
        if source.default_config is None:
            continue
        expected, seeds = config_hash(source.default_config(setting)), len(report.get("seeds") or [])
        if report.get("config_hash") != expected:
            why = f"has config_hash {report.get('config_hash')}, the current {setting} default has {expected}"
        elif seeds != source.seeds:
            why = f"holds {seeds} seed(s), the README shows {source.seeds}"
        else:
            continue
        stale[stem] = f"assets/{stem}.json {why}: rerun `{source.command_for(setting)}`"
    return stale


# ---------------------------------------------------------------------- formatting helpers
def pct(value: float) -> str:
    return f"{value:.1f}"


def cell(part: dict | None, row: str, column: str, value: float) -> str:
    """``value``, or with several seeds ``mean (min–max)`` from ``part`` (the report's range)."""
    if part is None:
        return pct(value)
    r = part[row][column]
    return f"{pct(r['mean'])} ({pct(r['min'])}–{pct(r['max'])})"


def seeds_caption(report: dict) -> str:
    """``seed 0, calm_mini 0.1.0`` or ``mean (min–max) over 5 seeds (0, 1, 2, 3, 4), calm_mini 0.1.0``."""
    seeds, version = report.get("seeds"), report.get("calm_mini_version")
    which = ("seed not recorded" if not seeds else f"seed {seeds[0]}" if len(seeds) == 1
             else f"mean (min–max) over {len(seeds)} seeds ({', '.join(map(str, seeds))})")
    return f"{which}, calm_mini {version or 'version not recorded'}"


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def markdown_table(header: list[str], rows: list[list[str]], right: int = 1) -> str:
    """A Markdown table; columns from ``right`` on are right-aligned."""
    rule = ["---" if i < right else "---:" for i in range(len(header))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, rule, *rows])
