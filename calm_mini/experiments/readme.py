"""The README's results, rendered from the JSON reports under ``assets/`` (never copied by hand).

In README.md every generated part sits between two markers::

    <!-- generated: kv_results table1 -->
    …rendered text…
    <!-- /generated -->

(on their own lines for a table, inline inside a sentence for a number). The name is the
report's file stem and a part; :data:`PARTS` renders each from the reports.

    python -m calm_mini readme            # rewrite the generated parts of README.md
    python -m calm_mini readme --check    # exit 1 and name each part that disagrees with its JSON

:data:`SOURCES` says which command writes each report and how to rebuild the default config of
its setting, so :func:`stale_reports` can tell a report written by another configuration
(its ``config_hash`` differs from the current default's).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Callable

from .benchmark_parts import BENCHMARK_PARTS
from .results import (SOURCES, cell, duration, load_reports, markdown_table, pct, seeds_caption, stale_reports,
                      written_by)

MARKER = re.compile(r"<!-- generated: (?P<name>[\w.-]+ [\w.-]+) -->(?P<body>.*?)<!-- /generated -->", re.S)


# ---------------------------------------------------------------------- kv_results
KV_ROWS = {"KV-SUBS": "KV-SUBS (key → value)", "NUM-MATH": "NUM-MATH (arithmetic on numbers)",
           "KV-MATH": "KV-MATH on **held-out** keys", "KV-MATH (D_C keys)": "KV-MATH on D_C keys"}


def kv_setup(reports: dict, stem: str = "kv_results") -> str:
    """The models and the data of a key-value report, from its config."""
    cfg = reports[stem]["config"]
    kv, anchor, augmenting = cfg["kv"], cfg["anchor"], cfg["augmenting"]
    dc = round(kv["dc_fraction"] * kv["n_keys"])
    lo, hi = kv["number_range"]  # the numbers NUM-MATH draws from
    ops = "–".join(map(str, sorted(set(kv["n_operands"]))))
    return (f"The anchor m_B ({anchor['n_layers']}-layer Llama, d={anchor['d_model']}) is trained on NUM-MATH "
            f"({ops} operands from {lo}–{hi}, `{kv['operators']}`); the augmenting model m_A "
            f"({augmenting['n_layers']}-layer Llama, d={augmenting['d_model']}) on the values of all {kv['n_keys']} "
            "keys; D_C covers only "
            f"{round(100 * kv['dc_fraction'])} % of the keys ({dc}), and KV-MATH is scored on the other "
            f"{kv['n_keys'] - dc}. D_C's rows are {round(100 * kv['dc_num_math_fraction'])} % NUM-MATH, "
            f"{round(100 * kv.get('dc_kv_subs_fraction', 0))} % KV-SUBS over D_C keys (the paper's D_C asked for "
            "bare key → value pairs too) and the rest KV-MATH over D_C keys")


def kv_table1(reports: dict, stem: str = "kv_results") -> str:
    """Table 1 with the paper's numbers beside ours; several seeds as mean (min–max)."""
    report = reports[stem]
    table, part, paper = report["table"], report.get("range"), report["paper"]
    rows = []
    for task, label in KV_ROWS.items():
        if task not in table:
            continue
        cells = [cell(part, task, m, table[task][m]) for m in ("m_A", "m_B", "CALM")]
        if task == "KV-MATH":
            cells[2] = f"**{cells[2]}**"
        ref = paper.get(task)
        rows.append([label, *cells, " / ".join(pct(ref[m]) for m in ("m_A", "m_B", "CALM")) if ref else "—"])
    caption = (f"`{written_by(stem, report)}`, {report['setting']} setting, "
               f"{seeds_caption(report)}, exact match %:")
    return caption + "\n\n" + markdown_table(["task", "m_A alone", "m_B alone", "CALM", "paper: m_A / m_B / CALM"], rows)


def kv_timing(reports: dict, stem: str = "kv_results") -> str:
    """How long a seed's run took (its base models trained, or loaded when cached)."""
    report = reports[stem]
    runs = report.get("per_seed", [report])  # a report from before several seeds has one run's seconds
    totals = [r["seconds"]["total"] for r in runs]
    bases = [r["seconds"]["base_models"] for r in runs]
    span = f" ({duration(min(totals))}–{duration(max(totals))})" if len(runs) > 1 else ""
    return (f"{duration(sum(totals) / len(totals))} per seed{span}, of which {duration(sum(bases) / len(bases))} "
            "for the base models (trained, or loaded when the cache has them)")


# ---------------------------------------------------------------------- kv_ablations
VARIANT_LABELS = {"CALM": "**CALM**", "CALM, raw bridge inputs": "CALM without normalised bridge inputs",
                  "random m_A": "random m_A", "vanilla m_A": "vanilla m_A (never saw the keys)",
                  "m_A as encoder": "m_A as an encoder of the prompt only", "LoRA on m_B": "LoRA on m_B (rank matched, {n})",
                  "fine-tuned m_B (skyline)": "fine-tuned m_B, skyline ({n})"}
PLACEMENT_LABELS = {"1 bridge, middle": "one bridge in the middle", "2 bridges, middle": "two bridges in the middle",
                    "after every anchor layer": "after every anchor layer", "embeddings only": "embeddings only",
                    "embeddings + every layer": "embeddings + every layer"}


def _layers(layers: list[list[int]]) -> str:
    """``[[1, -1], [1, 0]]`` → ``1 → −1, 0`` (every placement reads one augmenting layer)."""
    sources = sorted({a for a, _ in layers})
    return f"{', '.join(map(str, sources))} → {', '.join(str(b).replace('-', '−') for _, b in layers)}"


def _thousands(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def ablations_caption(reports: dict) -> str:
    report = reports["kv_ablations"]
    rows = [r for part in ("variants", "placement") for r in report[part].values()]
    first = (report.get("seeds") or ["?"])[0]
    timed = (f", {round(sum(r['seconds'] for r in rows) / 60)} min of training and scoring for seed {first}"
             if all("seconds" in r for r in rows) else "")
    return (f"`{written_by('kv_ablations', report)}`, {report['setting']} setting, "
            f"{seeds_caption(report)}{timed}; exact match %, held-out keys for KV-MATH; every variant trains about "
            f"{_thousands(report['budget'])} parameters except the skyline, which trains the whole anchor")


def ablations_variants(reports: dict) -> str:
    report = reports["kv_ablations"]
    part = report.get("range", {}).get("variants")
    rows = []
    for name, row in report["variants"].items():
        label = VARIANT_LABELS.get(name, name).format(n=_thousands(row["trainable"]))
        cells = [cell(part, name, t, row[t]) for t in ("NUM-MATH", "KV-MATH")]
        rows.append([label, *(f"**{c}**" if name == "CALM" and t == "KV-MATH" else c
                               for c, t in zip(cells, ("NUM-MATH", "KV-MATH")))])
    return markdown_table(["variant", "NUM-MATH", "KV-MATH (held-out keys)"], rows)


def _placements(report: dict) -> dict[str, tuple[dict, dict | None]]:
    """``{placement name: (row without recency, row with recency)}``."""
    rows = report["placement"]
    return {name: (row, rows.get(f"{name} + recency")) for name, row in rows.items() if not row["recency_bias"]}


def _label(name: str) -> str:
    return next((v for k, v in PLACEMENT_LABELS.items() if name.startswith(k)), name)


def ablations_placement(reports: dict) -> str:
    report = reports["kv_ablations"]
    part = report.get("range", {}).get("placement")
    rows = []
    for name, (plain, recency) in _placements(report).items():
        cells = [cell(part, name, "KV-MATH", plain["KV-MATH"]),
                 cell(part, f"{name} + recency", "KV-MATH", recency["KV-MATH"]) if recency else "—"]
        rows.append([f"{_label(name)} ({_layers(plain['layers'])})", str(plain["bridges"]), *cells])
    return markdown_table(["placement (augmenting → anchor layers)", "bridges", "KV-MATH", "+ recency"], rows)


def _kv_math_span(rows: list[dict]) -> str:
    values = [r["KV-MATH"] for r in rows]
    if not values:
        return "— (no such placement in this report)"
    return f"{pct(min(values))}–{pct(max(values))} %"


def ablations_few_bridges(reports: dict) -> str:
    rows = reports["kv_ablations"]["placement"]
    return _kv_math_span([r for n, r in rows.items() if n.startswith(("1 bridge, middle", "2 bridges, middle"))])


def ablations_four_bridges(reports: dict) -> str:
    return _kv_math_span([r for r in reports["kv_ablations"]["placement"].values() if r["bridges"] == 4])


def ablations_recency(reports: dict) -> str:
    """Held-out KV-MATH of the two four-bridge maps, without and with the recency bias."""
    rows = reports["kv_ablations"]["placement"]
    pairs = {label: (rows[name]["KV-MATH"], rows[f"{name} + recency"]["KV-MATH"])
             for label, name in (("CALM's map", "embeddings + every layer"),
                                 ("the paper-style map (a bridge after every anchor layer)", "after every anchor layer"))}
    return "; ".join(f"{label}: {pct(plain)} % without it, {pct(recency)} % with it"
                     for label, (plain, recency) in pairs.items())


def ablations_embeddings_only(reports: dict) -> str:
    return _kv_math_span([r for n, r in reports["kv_ablations"]["placement"].items() if n.startswith("embeddings only")])


def ablations_normalized(reports: dict) -> str:
    """What normalised bridge inputs buy, from the variants table."""
    rows = reports["kv_ablations"]["variants"]
    calm, raw = rows["CALM"], rows["CALM, raw bridge inputs"]
    return (f"Without them the same bridges score {pct(raw['NUM-MATH'])} % on NUM-MATH and {pct(raw['KV-MATH'])} % "
            f"on held-out KV-MATH, against {pct(calm['NUM-MATH'])} % and {pct(calm['KV-MATH'])} % with them "
            "(variants table below)")


# ---------------------------------------------------------------------- facts_results
FACTS_ROWS = {"anchor": "anchor alone", "augmenting": "m_A alone", "composite": "composite",
              "composite (train people)": "composite, {n} train people"}


def facts_caption(reports: dict) -> str:
    report = reports["facts_results"]
    split = report["split"]
    people = {"heldout": "held-out", "validation": "validation"}.get(split, split)
    return (f"`{written_by('facts_results', report)}`, {report['setting']} setting, {seeds_caption(report)}; "
            f"{report['people'][split]} {people} people × 4 questions")


def facts_table(reports: dict) -> str:
    report = reports["facts_results"]
    scored = report["people"][report["split"]]
    rows = [[FACTS_ROWS.get(name, name).format(n=scored), *(pct(row[k]) for k in ("exact", "value", "value_token",
                                                                                   "value_all"))]
            for name, row in report["chat"].items()]
    return markdown_table(["model", "exact answer", "right value in answer", "value tokens (teacher-forced)",
                      "whole value (forced)"], rows)


def facts_exact(reports: dict) -> str:
    return f"{pct(reports['facts_results']['chat']['composite']['exact'])} %"


def facts_knows(reports: dict) -> str:
    return f"{pct(reports['facts_results']['chat']['augmenting']['value_all'])} %"


def facts_train_people(reports: dict) -> str:
    report = reports["facts_results"]
    return (f"{pct(report['chat']['composite (train people)']['value_all'])} %, m_A "
            f"{pct(report['augmenting_knows_statements']['train']['all'])} % on their statements")


def facts_ordinary(reports: dict) -> str:
    ordinary = reports["facts_results"]["ordinary"]
    return (f"{ordinary['identical']} of {ordinary['of']} shown prompts identical, {pct(ordinary['agreement'])} % "
            "of the anchor's tokens reproduced before the first difference")


def facts_timing(reports: dict) -> str:
    report = reports["facts_results"]
    s, cfg = report["seconds"], report["config"]["bridges"]
    cached = " (trained in an earlier run and loaded from the cache in this one)" if s["augmenting_cached"] else ""
    return (f"Training takes {(s['augmenting'] + s['bridges']) / 60:.1f} min on {report['threads']} threads: m_A "
            f"{s['augmenting']:.0f} s{cached}, the bridges {s['bridges']:.0f} s ({cfg['steps']} steps × "
            f"{cfg['batch_size']} rows, including {s['bridge_data_and_features']:.0f} s to write the anchor's ordinary "
            f"answers, the soft targets and the feature cache); loading and evaluation add about "
            f"{(s['total'] - s['bridges']) / 60:.1f} min")


# ---------------------------------------------------------------------- keys_chars_results
def keys_chars_run(reports: dict) -> str:
    report = reports["keys_chars_results"]
    keys, s = report["keys"], report["seconds"]
    cached = ", the character model loaded from the cache" if s["augmenting_cached"] else ""
    return (f"trains two bridges for {report['config']['bridges']['steps']} steps on {keys['dc']} keys "
            f"({duration(s['total'])} in all{cached}), and scores next-token exact match on "
            f"{keys['scored'] * keys['templates']} held-out prompts ({keys['scored']} keys the bridges never saw × "
            f"{keys['templates']} phrasings)")


def keys_chars_table(reports: dict) -> str:
    report = reports["keys_chars_results"]
    held, seen = report["table"]["held-out keys"], report["table"]["D_C keys"]
    n = report["keys"]["scored"] * report["keys"]["templates"]
    rows = [["SmolLM2-135M anchor alone", pct(held["anchor"])],
            ["character model alone, on the same prompts", pct(held["augmenting"])],
            ["**composite, keys the bridges never saw**", f"**{pct(held['composite'])}**"],
            ["composite, keys in D_C", pct(seen["composite"])],
            ["character model in its own `key:` format (what it knows)", pct(report["augmenting_own_format"])]]
    header = (f"`{written_by('keys_chars_results', report)}`, {report['setting']}, "
              f"{seeds_caption(report)} (next-token exact match, {n} held-out prompts)")
    return markdown_table([header, "%"], rows)


def keys_chars_own_format(reports: dict) -> str:
    return f"{pct(reports['keys_chars_results']['augmenting_own_format'])} %"


# ---------------------------------------------------------------------- explorer_screenshot
def explorer_caption(reports: dict) -> str:
    """What the README's explorer picture shows, from the screenshot command's report."""
    shot = reports["explorer_screenshot"]
    row, others = shot["row"]["token"], shot["own_weight_elsewhere"]
    return (f"the trained {shot['setting']} key-value composition ({seeds_caption(shot)}) on the held-out prompt "
            f"`{shot['prompt']}`. Head {shot['head']} of {shot['bridge_label'].split(':')[0]} "
            f"({shot['bridge_label'].split(': ', 1)[1].replace('augmenting 0 layer', 'm_A layer')}), the head that "
            f"reads the keys most selectively, puts {shot['weight_on_key']:.3f} of row `{row}` on `{row}`'s own "
            f"augmenting state, where m_A holds the key's value; the other tokens put {others:.1f} on their own")


PARTS: dict[str, Callable[[dict], str]] = {
    "kv_results setup": kv_setup,
    "kv_results table1": kv_table1,
    "kv_results timing": kv_timing,
    "kv_results_paper_cpu setup": functools.partial(kv_setup, stem="kv_results_paper_cpu"),
    "kv_results_paper_cpu table1": functools.partial(kv_table1, stem="kv_results_paper_cpu"),
    "kv_results_paper_cpu timing": functools.partial(kv_timing, stem="kv_results_paper_cpu"),
    "kv_ablations caption": ablations_caption,
    "kv_ablations variants": ablations_variants,
    "kv_ablations placement": ablations_placement,
    "kv_ablations few-bridges": ablations_few_bridges,
    "kv_ablations four-bridges": ablations_four_bridges,
    "kv_ablations recency": ablations_recency,
    "kv_ablations embeddings-only": ablations_embeddings_only,
    "kv_ablations normalized": ablations_normalized,
    "facts_results caption": facts_caption,
    "facts_results table": facts_table,
    "facts_results exact": facts_exact,
    "facts_results knows": facts_knows,
    "facts_results train-people": facts_train_people,
    "facts_results ordinary": facts_ordinary,
    "facts_results timing": facts_timing,
    "keys_chars_results run": keys_chars_run,
    "keys_chars_results table": keys_chars_table,
    "keys_chars_results own-format": keys_chars_own_format,
    "explorer_screenshot caption": explorer_caption,
    **BENCHMARK_PARTS,
}


# ---------------------------------------------------------------------- rendering and checking
def render(text: str, reports: dict[str, dict]) -> str:
    """``text`` (the README) with every generated part rendered from ``reports``. A part on its
    own lines (a table) keeps its lines; an inline part stays inline."""

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in PARTS:
            raise ValueError(f"README marker {name!r} names no part; known parts: {', '.join(PARTS)}.")
        stem = name.split()[0]
        if stem not in reports:
            raise FileNotFoundError(f"README part {name!r} needs assets/{stem}.json: run "
                                    f"`{SOURCES[stem].command_for(SOURCES[stem].setting)}` to write it.")
        body = PARTS[name](reports)
        block = match["body"].startswith("\n")
        return f"<!-- generated: {name} -->" + (f"\n{body}\n" if block else body) + "<!-- /generated -->"

    return MARKER.sub(replace, text)


def disagreements(text: str, reports: dict[str, dict]) -> list[str]:
    """Names of the generated parts of ``text`` whose content differs from their rendering."""
    rendered = {m["name"]: m["body"] for m in MARKER.finditer(render(text, reports))}
    return [m["name"] for m in MARKER.finditer(text) if m["body"] != rendered[m["name"]]]


def update_readme(readme: str | Path = "README.md", assets: str | Path = "assets", check: bool = False) -> list[str]:
    """Rewrite ``readme``'s generated parts from ``assets`` (atomically), or with ``check`` only
    return the names of the parts that disagree with their JSON (an empty list: all agree)."""
    from ..core.files import atomic_write

    path = Path(readme)
    text, reports = path.read_text(), load_reports(assets)
    differ = disagreements(text, reports)
    if differ and not check:
        new = render(text, reports)
        atomic_write(path, lambda tmp: Path(tmp).write_text(new))
    return differ


__all__ = ["MARKER", "PARTS", "SOURCES", "disagreements", "load_reports", "render", "stale_reports", "update_readme"]
