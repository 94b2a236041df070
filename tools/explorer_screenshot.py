"""Regenerate the README's explorer screenshot from a trained key-value composition.

    python tools/explorer_screenshot.py                                  # classroom, a few minutes on a CPU
    python tools/explorer_screenshot.py --setting smoke --assets DIR     # seconds (what the test runs)

Trains the key-value experiment's bridges as ``python -m calm_mini reproduce`` does (base models
from the model cache, ``$CALM_MINI_CACHE`` or ``~/.cache/calm_mini``), runs one KV-MATH prompt over
two held-out keys (``kaz+bol=``), picks the bridge head that reads the keys' own augmenting
states most selectively (:func:`calm_mini.viz.heads.own_token_head`: strongly from the keys, not
from the other tokens), opens the offline explorer on that bridge, head and the row of the key it reads most,
and screenshots it with Playwright on Debian's Chromium.

Writes ``explorer_screenshot.png`` and ``explorer_screenshot.json`` (what the picture shows: the
README's caption takes its numbers from it) to ``--assets``. Needs the dev extra (``pip install
-e ".[dev]"``: playwright) and ``apt-get install -y chromium``; never ``playwright install``.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from calm_mini import viz
from calm_mini.core.files import atomic_write
from calm_mini.experiments.kv import ExperimentConfig, build_base_models, compose_kv, evaluate_expression, train_bridges
from calm_mini.experiments.reports import provenance, write_report
from calm_mini.viz.heads import own_token_head

CHROMIUM = Path("/usr/bin/chromium")
# The network is closed: without these flags Chromium keeps trying (and failing) to phone home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1200, "height": 700}
NAME = "explorer_screenshot"


def missing_browser() -> str | None:
    """Why a screenshot cannot be taken here (and the fix), or ``None``."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright not installed (pip install playwright; use the system Chromium, not `playwright install`)"
    return None


def screenshot(page: Path, png: Path) -> Path:
    """Open the HTML file ``page`` in headless Chromium and write the whole page to ``png``, atomically."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT, device_scale_factor=2)
            tab.goto(page.resolve().as_uri())
            tab.wait_for_selector(".main-svg .hm image", timeout=20_000)  # plotly has drawn the heatmap
            atomic_write(png, lambda tmp: tab.screenshot(path=tmp, type="png", full_page=True))
        finally:
            browser.close()
    return png


def key_positions(ids: torch.Tensor, tokenizer, keys) -> list[int]:
    """Positions of ``ids`` (T,) whose token is one of ``keys``."""
    return [t for t, token in enumerate(tokenizer.convert_ids_to_tokens(ids.tolist())) if token in keys]


def _answer(prompt: str, keys: dict[str, int], example: str) -> str:
    """The value of a KV-MATH prompt such as ``kaz+bol=``; ``ValueError`` for anything else."""
    operands = re.split(r"[-+*]", prompt.removesuffix("="))
    if not prompt.endswith("=") or not any(o in keys for o in operands) or \
            not all(o in keys or o.isdigit() for o in operands):
        raise ValueError(f"prompt {prompt!r} is not KV-MATH over this setting's keys: write one like {example!r}.")
    return str(evaluate_expression(prompt[:-1], keys))


def run(setting: str, prompt: str | None, assets: Path, cache_dir: str | None, progress: bool, command: str) -> dict:
    """Train the composition, choose the view, write the PNG and the JSON; return the JSON's dict."""
    missing = missing_browser()
    if missing:  # before minutes of training, not after
        raise FileNotFoundError(missing)
    start = time.perf_counter()
    cfg = ExperimentConfig.named(setting)
    base = build_base_models(cfg.kv, cfg.anchor, cfg.augmenting, cache_dir, progress)
    model = compose_kv(base, cfg)
    train_bridges(model, base, cfg, progress=progress)
    heldout = base.data.splits["eval_kv_math_heldout"]
    # the first prompt over two keys (the first of all where every prompt has more)
    example = next((row["prompt"] for row in heldout if len(row["keys"]) == 2), heldout["prompt"][0])
    prompt = prompt or example
    answer = _answer(prompt, base.data.keys, example)
    tokenizer = base.data.tokenizer
    analysis = viz.analyse(model, prompt, tokenizer)
    keys = key_positions(analysis.ids, tokenizer, base.data.keys)
    choice = own_token_head(analysis.attention, keys)
    best = max(range(len(choice.weights)), key=choice.weights.__getitem__)
    shown = choice.positions[best]  # the key this head reads most surely: the row the picture opens on
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / f"{NAME}.html"
        viz.explorer_html(model, prompt, tokenizer, path=page, bridge=choice.bridge, head=choice.head, token=shown)
        screenshot(page, assets / f"{NAME}.png")
    composed, p_composed = viz.predictions(analysis, len(analysis.tokens) - 1, k=1)[0][0]
    report = {
        "command": command,
        "setting": setting,
        **provenance(cfg, [cfg.bridges.seed]),  # config, its hash, version, seeds
        "prompt": prompt,
        "tokens": analysis.tokens,
        "answer": answer,
        "composed_next": {"token": composed, "p": round(p_composed, 3)},
        "bridge": choice.bridge,
        "bridge_label": viz.bridge_label(choice.bridge, analysis.specs[choice.bridge]),
        "head": choice.head,
        "row": {"position": shown, "token": analysis.tokens[shown]},
        "weight_on_key": round(choice.weights[best], 3),
        "weights_on_keys": {analysis.tokens[p]: round(w, 3) for p, w in zip(choice.positions, choice.weights)},
        "own_weight_elsewhere": round(choice.elsewhere, 3),  # the other tokens (but the first) on themselves
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_report(report, assets / f"{NAME}.json")
    return report


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python tools/explorer_screenshot.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="classroom", choices=ExperimentConfig.SETTINGS,
                        help="the key-value experiment's setting (classroom: what the README shows)")
    parser.add_argument("--prompt", help="a KV-MATH prompt over keys, e.g. 'kaz+bol=' (default: the first "
                                         "held-out one over two keys)")
    parser.add_argument("--assets", default="assets", help="where the PNG and the JSON go")
    parser.add_argument("--cache-dir", help="base-model cache (default $CALM_MINI_CACHE or ~/.cache/calm_mini)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        report = run(args.setting, args.prompt, Path(args.assets), args.cache_dir, not args.quiet,
                     command=" ".join([parser.prog, *argv]))
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"{args.assets}/{NAME}.png: {report['prompt']!r}, {report['bridge_label']}, head {report['head']} puts "
          f"{report['weight_on_key']} of row {report['row']['token']!r} on its own key; {report['seconds']} s")
    return report


if __name__ == "__main__":
    main()
