"""Collect the JSON files of a benchmark run into one table (Markdown) and one ``summary.json``.

python benchmarks/summary.py assets/bench_gpu        # after benchmarks/gpu.sh
python benchmarks/summary.py runs/bench_cpu --json assets/bench_cpu.json   # after benchmarks/cpu.sh
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calm_mini.core.files import atomic_write


def figure(result: dict) -> tuple[str, str]:
    """(what was measured, the headline figure with its target) of one benchmark's JSON."""
    kind = result["benchmark"]
    extra = [f for f in ("gradient_checkpointing", "compile") if result["setting"].get(f)]
    options = f" ({', '.join(extra)})" if extra else ""
    if kind == "train_step":
        return "train step ratio" + options, f"{result['ratio']:.3f} (target ≤ 1.10)"
    if kind == "decode":
        return "decode ratio", f"{result['ratio']:.3f} (target ≥ 0.85)"
    gib = 2**30
    peaks = result["peak_bytes"]
    text = f"{peaks['training'] / gib:.2f} GiB training vs {peaks['inference'] / gib:.2f} GiB anchor inference"
    if result.get("measured_over_estimate"):
        text += f" (measured ÷ estimate {result['measured_over_estimate']:.2f})"
    return "peak memory" + options, text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="the summary (default FOLDER/summary.json)")
    args = parser.parse_args(argv)
    results = []
    for path in sorted(args.folder.glob("*.json")):
        if path.name == "summary.json":
            continue
        data = json.loads(path.read_text())
        if "benchmark" in data:
            results.append((path.name, data))
    if not results:
        raise SystemExit(f"No benchmark JSON files in {args.folder}.")
    lines = ["| pair | setting | figure | value | device |", "|---|---|---|---|---|"]
    for _, r in results:
        s, env = r["setting"], r["environment"]
        name, value = figure(r)
        lines.append(
            f"| {s['anchor']} ← {s['augmenting']} | batch {s['batch']} × {s['length']}, {env['dtype']} "
            f"| {name} | {value} | {env['device_name']} |"
        )
    print("\n".join(lines))
    summary = {"files": [n for n, _ in results], "table": lines, "results": [r for _, r in results]}
    atomic_write(args.json or args.folder / "summary.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n"))


if __name__ == "__main__":
    main()
