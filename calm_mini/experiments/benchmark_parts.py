"""The README's benchmark figures, rendered from the benchmarks' JSON under ``assets/`` (one part
per table or number; :mod:`calm_mini.experiments.readme` renders and checks them with the rest).

- ``bench_hot_path_cpu``: ``python benchmarks/hot_path.py --json assets/bench_hot_path_cpu.json``;
- ``bench_cpu``: ``bash benchmarks/cpu.sh`` (train step, decoding, memory; its ``results`` are the
  benchmarks' own JSON);
- ``bench_data_path_cpu``: ``python benchmarks/data_path.py --threads 2 --json assets/bench_data_path_cpu.json``.
"""

from __future__ import annotations

from typing import Callable

from .results import markdown_table, written_by

MIB = 2**20


# ---------------------------------------------------------------------- bench_hot_path_cpu
def hot_path_table(reports: dict) -> str:
    """The hot-path benchmark: forward and cached decoding against running both models, per pair."""
    report = reports["bench_hot_path_cpu"]
    env, setting, targets = report["environment"], report["setting"], report["targets"]
    rows = []
    for name, pair in report["pairs"].items():
        a, b, f = pair["anchor"], pair["augmenting"], pair["forward"]
        decode = " / ".join(f"{d['ratio']:.3f}" for d in pair["decode"].values())
        decode_floor = " / ".join(f"{d['floor']:.3f}" for d in pair["decode"].values())
        rows.append([f"{name}: {a['hidden_size']}×{a['layers']} ← {b['hidden_size']}×{b['layers']}",
                     f"**{f['ratio']:.3f}** ({f['floor']:.3f})", f"{f['official_ratio']:.3f}",
                     f"**{decode}** ({decode_floor})", f"{pair['weights_floor']:.3f}"])  # fmt: skip
    tokens = " / ".join(map(str, setting["new_tokens"]))
    caption = (f"`{written_by('bench_hot_path_cpu', report)}`: random Gemma pairs (MLP {setting['mlp_ratio']}× "
               f"the width), 2 bridges, fp32, {env['threads']} threads of an {env['device_name']}, torch "
               f"{env['torch']}. Forward of {setting['batch']}×{setting['length']} tokens ÷ (anchor + augmenting), "
               f"target ≤ {targets['forward_ratio_at_most']}; cached decoding of one sequence, (anchor + "
               f"augmenting) ÷ composed at {tokens} new tokens, target ≥ {targets['decode_ratio_at_least']}. "
               "In brackets the floor: the ratio were composition to cost only the bridges' arithmetic:")
    header = ["pair", "forward (floor)", "official-style forward", f"decode {tokens} (floor)", "weights floor"]
    return caption + "\n\n" + markdown_table(header, rows)


# ---------------------------------------------------------------------- bench_cpu
def _cpu_result(r: dict) -> str:
    """The figure of one benchmark's JSON, in milliseconds or MiB, with its headline ratio in bold."""
    if r["benchmark"] == "train_step":
        s = r["seconds"]
        return (f"composed step {1000 * s['composed_step']:.0f} ms; anchor fwd+bwd {1000 * s['anchor_forward_backward']:.0f}"
                f" ms + augmenting fwd {1000 * s['augmenting_forward']:.0f} ms; **ratio {r['ratio']:.2f}**")
    if r["benchmark"] == "decode":
        ms = r["ms_per_step"]
        return (f"composed {ms['composed']:.1f} ms/step; anchor {ms['anchor']:.1f} + augmenting {ms['augmenting']:.1f} ms;"
                f" **ratio {r['ratio']:.2f}**")
    peaks = r["peak_bytes"]
    return (f"training {peaks['training'] / MIB:.0f} MiB vs anchor inference {peaks['inference'] / MIB:.0f} MiB "
            f"({r['training_over_inference']:.2f}×); measured ÷ estimate {r['measured_over_estimate']:.2f}")


def _cpu_command(r: dict) -> str:
    s = r["setting"]
    options = "".join(f" --{o.replace('_', '-')}" for o in ("gradient_checkpointing", "compile") if s.get(o))
    extra = f" --new-tokens {s['new_tokens']}" if "new_tokens" in s else ""
    return f"`{r['benchmark']}.py --batch {s['batch']} --length {s['length']}{extra}{options}`"


def cpu_table(reports: dict) -> str:
    """One row per benchmark run of ``benchmarks/cpu.sh``."""
    results = reports["bench_cpu"]["results"]
    env = results[0]["environment"]
    rows = [[_cpu_command(r), f"{r['setting']['anchor']} ← {r['setting']['augmenting']}, {r['environment']['dtype']}",
             _cpu_result(r)] for r in results]  # fmt: skip
    caption = (f"`{written_by('bench_cpu', reports['bench_cpu'])}`: {env['device_name']}, {env['threads']} thread, "
               f"torch {env['torch']}, transformers {env['transformers']}, SmolLM2-shaped models with random weights, "
               f"{results[0]['setting']['bridges']} bridges (every 4th augmenting layer); timings on a shared machine "
               "are noisy (a few %):")
    return caption + "\n\n" + markdown_table(["benchmark", "setting", "result"], rows, right=3)  # no column right-aligned


def _memory(reports: dict) -> list[dict]:
    return [r for r in reports["bench_cpu"]["results"] if r["benchmark"] == "memory"]


def cpu_memory_span(reports: dict) -> str:
    """How many times the anchor's inference memory training needs, lowest–highest."""
    ratios = [r["training_over_inference"] for r in _memory(reports)]
    return f"{min(ratios):.1f}–{max(ratios):.1f}×"


def cpu_estimate_span(reports: dict) -> str:
    """Measured peak ÷ the memory estimate, lowest–highest."""
    ratios = [r["measured_over_estimate"] for r in _memory(reports)]
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


# ---------------------------------------------------------------------- bench_data_path_cpu
def data_path(reports: dict) -> str:
    """The data path's cost against the facts demo's hand-made tensors, and tokenising's share."""
    r = reports["bench_data_path_cpu"]
    s, rows = r["setting"], f"{r['setting']['rows']:,}".replace(",", " ")
    return (f"{r['step_ratio']:.2f}× on the same {rows} rows, and tokenising them took "
            f"{r['tokenisation_over_training']:.4f} of the epoch of training they feed "
            f"(`{written_by('bench_data_path_cpu', r)}`: {s['anchor']} ← {s['augmenting']}, "
            f"{r['environment']['threads']} shared CPU cores, medians of {s['repeats']} steps; before this cut the "
            f"path cost {r['before_over_hand_made']:.2f}×)")


BENCHMARK_PARTS: dict[str, Callable[[dict], str]] = {
    "bench_hot_path_cpu table": hot_path_table,
    "bench_cpu table": cpu_table,
    "bench_cpu memory-span": cpu_memory_span,
    "bench_cpu estimate-span": cpu_estimate_span,
    "bench_data_path_cpu sentence": data_path,
}
