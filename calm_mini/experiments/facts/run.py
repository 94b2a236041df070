"""A real composition that runs offline: SmolLM2-135M-Instruct learns fictional facts from a
small augmenting model, through bridges trained on questions about other people.

    report = run(FactsConfig.classroom())      # train-or-load m_A, train bridges, evaluate, write JSON

The pieces, in the order of the data:

* the world (:mod:`.world`): invented people and four facts each;
* the augmenting model m_A (:mod:`.augmenting`): a small Llama with SmolLM2's tokenizer, its token embeddings (and,
  tied to them, its output layer) copied from SmolLM2 and frozen, its layers trained from scratch
  on fact statements about ALL people — loss on the value tokens only. Sharing the anchor's
  embedding space means m_A's last hidden state already "speaks" the anchor's output vocabulary;
* the composite (:mod:`.bridges`): bridges from m_A's last layer into the anchor's upper layers, trained with
  :func:`calm_mini.training.train` on chat questions about the *train* people, plus ordinary chat
  prompts with the anchor's own answers (so ordinary answers stay). At the value tokens the
  target is m_A's own next-token distribution, on the ordinary answers the anchor's
  (:func:`calm_mini.training.soft_targets`): the bridges learn to pass on what m_A says, not to memorise the train
  people's facts — which the true values alone reward. The frozen
  anchor's states entering the lowest bridged layer are computed once (*feature caching*,
  :func:`calm_mini.training.anchor_features`); a step runs only the anchor layers from there up, and the output
  layer only where there is a label (:class:`calm_mini.training.CachedAnswerWindow`) — same loss and gradients;
* evaluation (:mod:`.scores`) on the *held-out* people: exact answers, value-token accuracy, and the anchor's
  ordinary chat answers beside the composite's.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...training import train
from ..reports import provenance, write_report
from .augmenting import load_or_train_augmenting
from .bridges import bridge_data, bridge_trainer, compose_facts
from .config import FactsConfig
from .scores import chat_table, compare_ordinary, target_accuracy
from .world import chat_splits, make_world, ordinary_prompts, ordinary_questions, statements


def run(cfg: FactsConfig, assets: str | Path | None = "assets", cache_dir: str | Path | None = None,
        progress: bool = True, split: str = "heldout", anchor: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None) -> dict:
    """The demo end to end: world, m_A (cached), bridges, evaluation on ``split``'s people.

    ``split="validation"`` scores the validation people instead (to choose settings without
    looking at the held-out test). The anchor is SmolLM2-135M-Instruct unless ``anchor`` and
    its chat ``tokenizer`` are given (tests pass tiny ones). Writes ``facts_results.json`` to
    ``assets`` (unless None) and returns the report.
    """
    from ...models import load

    if split not in ("heldout", "validation"):
        raise ValueError(f"split={split!r}: score 'heldout' (the test) or 'validation' (to choose settings).")
    if (anchor is None) != (tokenizer is None):
        raise ValueError("Give both anchor and tokenizer, or neither (then SmolLM2-135M-Instruct is loaded).")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    if anchor is None:
        anchor, tokenizer = load("smollm2-135m-offline")
    world = make_world(cfg.world, tokenizer)
    augmenting, info = load_or_train_augmenting(world, anchor, tokenizer, cfg.augmenting, cache_dir, progress)
    model = compose_facts(anchor, augmenting, cfg)
    bridge_start = time.perf_counter()
    data, _ = bridge_data(world, tokenizer, anchor, cfg)
    window, data = bridge_trainer(model, data, cfg)
    feature_seconds = time.perf_counter() - bridge_start
    log = train(window, data, cfg.bridges, progress=progress, desc="bridges")
    bridge_seconds = time.perf_counter() - bridge_start
    facts = statements(world)
    known = {}
    for part in ("train", "validation", "heldout"):
        rows = facts.select([i for i, s in enumerate(facts["split"]) if s == part])
        known[part] = target_accuracy(augmenting, tokenizer, list(rows["prompt"]), list(rows["answer"]),
                                      cfg.eval_batch_size)
    questions = chat_splits(world, tokenizer)
    table = chat_table({"anchor": anchor, "augmenting": augmenting, "composite": model}, tokenizer, questions[split],
                       cfg.eval_batch_size)
    seen = questions["train"].select(range(min(len(questions["train"]), len(questions[split]))))  # as many as scored
    table["composite (train people)"] = chat_table({"c": model}, tokenizer, seen, cfg.eval_batch_size)["c"]
    ordinary = compare_ordinary(anchor, model, tokenizer, ordinary_prompts(tokenizer)["shown"],
                                ordinary_questions()["shown"], cfg.ordinary_new_tokens, cfg.eval_batch_size)
    report = {
        "setting": cfg.setting, "split": split, **provenance(cfg, [cfg.world.seed]),
        "people": {s: len(world.split(s)) for s in ("train", "validation", "heldout")},
        "augmenting_knows_statements": known, "chat": table, "ordinary": ordinary,
        "bridge_parameters": model.num_bridge_parameters(),
        "augmenting_parameters": sum(p.numel() for p in augmenting.parameters()),
        "seconds": {"augmenting": info["train_seconds"], "augmenting_cached": info["cached"],
                    "bridge_data_and_features": round(feature_seconds, 1),  # included in "bridges"
                    "bridges": round(bridge_seconds, 1), "total": round(time.perf_counter() - start, 1)},
        "threads": torch.get_num_threads(), "log": log, "summary": model.summary(),
    }
    if assets is not None:
        write_report(report, Path(assets) / "facts_results.json")
    return report


def format_report(report: dict) -> str:
    """The report as text: the chat table (Markdown), what m_A knows, the ordinary answers, times."""
    split = report["split"]
    lines = [f"Chat questions about {report['people'][split]} {split} people (%):", "",
             "| model | exact answer | right value in answer | value tokens (forced) | whole value (forced) |",
             "|---|---:|---:|---:|---:|"]
    for name, row in report["chat"].items():
        lines.append(f"| {name} | {row['exact']:.1f} | {row['value']:.1f} | {row['value_token']:.1f} | {row['value_all']:.1f} |")
    known = ", ".join(f"{s} {v['all']:.1f}" for s, v in report["augmenting_knows_statements"].items())
    lines += ["", f"m_A completes corpus statements (whole value, %): {known}", "",
              (f"Ordinary prompts: {report['ordinary']['identical']} of {report['ordinary']['of']} answers identical "
               f"to the anchor's; {report['ordinary']['agreement']:.1f} % of the anchor's tokens reproduced.")]
    for row in report["ordinary"]["answers"]:
        lines.append(f"  {row['prompt']}\n    anchor    : {row['anchor']!r}\n    composite : {row['composite']!r}")
    lines.append(f"\nseconds: {report['seconds']}; threads: {report['threads']}")
    return "\n".join(lines)
