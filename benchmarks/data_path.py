"""The dataset-driven training path (``python -m calm_mini train``): what tokenising costs beside
the training it feeds, and what one training step costs beside the facts demo's hand-made tensors.

    python benchmarks/data_path.py --threads 2 --json assets/bench_data_path_cpu.json   # SmolLM2, CPU
    python benchmarks/data_path.py --quick                                              # tiny, seconds

The rows: ``--rows`` (100 000) short chat questions about the facts world's people, in the
``completion`` format (``prompt``: the question in SmolLM2's chat template, ``completion``: the
answer sentence) — token for token the rows the facts demo builds by hand (``encode_chat``).
The model: the offline SmolLM2-135M-Instruct anchor and an augmenting model of the facts demo's
m_A shape (random weights: speed does not depend on them), composed as the demo composes them.

1. tokenisation: ``load_examples`` (a JSONL file) + ``encode`` + ``as_tensors``, cold (a fresh
   datasets cache each time), with ``num_proc`` 1 and 2;
2. the training it feeds: one epoch of the rows at the CLI's default batch size (8), i.e.
   ceil(rows / 8) steps × the median step of 3 — measured on ``--repeats`` batches and
   extrapolated, not run;
3. a training step (forward, loss, backward into the bridges, AdamW) on the same batches of
   rows, interleaved: through the new path (``as_tensors`` rows, ``LabelledRows``, which
   ``train_bridges`` trains) and through the facts demo's tensors (``encode_chat`` rows,
   ``AnswerWindow``); also the path before it cut batches and skipped the logits of prompts
   (``model(**batch)`` on rows padded to the longest of all), to show what that cost.

Targets: tokenisation ÷ the training it feeds ≤ 0.10; new-path step ÷ hand-made step ≤ 1.05.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import _harness as h
import datasets
import torch

from calm_mini.experiments.facts import FactsConfig
from calm_mini.experiments.facts.augmenting import new_augmenting
from calm_mini.experiments.facts.bridges import compose_facts, encode_chat
from calm_mini.experiments.facts.world import WorldConfig, chat_splits, make_world
from calm_mini.training import AnswerWindow, TrainConfig, batch_indices, make_optimizer
from calm_mini.training.data import as_tensors, encode, load_examples
from calm_mini.training.targets import LabelledRows

TARGETS = {"tokenisation_over_training_at_most": 0.10, "step_ratio_at_most": 1.05}
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def base_models(quick: bool):
    """(anchor, its tokenizer, the facts settings): SmolLM2 offline, or with ``quick`` a tiny Llama
    with a character tokenizer and a facts m_A shrunk to its width."""
    cfg = FactsConfig.classroom()
    if not quick:
        from calm_mini.models import load  # imports gguf: only the full run needs it

        anchor, tokenizer = load(h.OFFLINE)
        return anchor, tokenizer, cfg
    from calm_mini.crosstok import char_tokenizer
    from calm_mini.models import tiny

    tokenizer = char_tokenizer(add_bos=False)  # the chat prompt starts itself, as SmolLM2's does
    tokenizer.chat_template = CHATML
    anchor = tiny("llama", hidden_size=64, num_layers=4, vocab_size=len(tokenizer))
    cfg = replace(cfg, layers=((1, 2), (1, 3)), augmenting=replace(cfg.augmenting, n_heads=4, n_kv_heads=2, d_ff=128))
    return anchor, tokenizer, cfg


def question_rows(tokenizer, n: int) -> tuple[list[str], list[str]]:
    """(prompts, answers): ``n`` chat questions about the facts world's people, four per person."""
    world_cfg = WorldConfig.classroom()
    world_cfg = replace(world_cfg, n_entities=math.ceil(n / 4) + world_cfg.n_validation + world_cfg.n_heldout)
    questions = chat_splits(make_world(world_cfg, tokenizer), tokenizer)["train"].select(range(n))
    return list(questions["prompt"]), list(questions["answer"])


@contextlib.contextmanager
def fresh_datasets_cache():
    """A new, empty datasets cache for the block: no run reuses another's Arrow files."""
    saved = datasets.config.HF_DATASETS_CACHE
    with tempfile.TemporaryDirectory() as folder:
        datasets.config.HF_DATASETS_CACHE = Path(folder)
        try:
            yield
        finally:
            datasets.config.HF_DATASETS_CACHE = saved


def tokenise(path: Path, tokenizer, num_proc: int) -> tuple[dict[str, torch.Tensor], float]:
    """What ``train_bridges`` does with a data file before training; (tensors, seconds)."""
    with fresh_datasets_cache():
        start = time.perf_counter()
        encoded = encode(load_examples(path), tokenizer, "completion", max_length=512, num_proc=num_proc)
        tensors = as_tensors(encoded, tokenizer.pad_token_id)
        return tensors, time.perf_counter() - start


def step_functions(model, hand: dict, new: dict, batches: list[torch.Tensor]) -> dict:
    """One training step per call, each function cycling through the same ``batches`` (indices)."""
    optimizer = make_optimizer(list(model.bridge_parameters()), TrainConfig())
    window, rows = AnswerWindow(model), LabelledRows(model)

    def stepper(module, data):
        turns = itertools.cycle(batches)

        def step():
            idx = next(turns)
            loss = module(**{k: v[idx] for k, v in data.items()}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    return {"new_path": stepper(rows, new), "hand_made": stepper(window, hand), "before": stepper(model, new)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="rows to tokenise (default 100 000)")
    p.add_argument("--batch", type=int, default=8, help="rows per step (default 8, the CLI's)")
    p.add_argument("--repeats", type=int, default=6, help="timed steps of each kind, on as many batches (median kept)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny models, 2000 rows: seconds (for tests)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rows, args.repeats = min(args.rows, 2000), min(args.repeats, 3)
    args.device, args.dtype = "cpu", "fp32"  # what h.environment reports
    args.anchor, args.augmenting = (h.TINY, "tiny facts m_A") if args.quick else (h.OFFLINE, "facts m_A (random)")
    datasets.disable_progress_bars()
    anchor, tokenizer, cfg = base_models(args.quick)
    model = compose_facts(anchor, new_augmenting(anchor, tokenizer, cfg.augmenting), cfg)
    h.randomize_outputs(model)
    model.train()

    prompts, answers = question_rows(tokenizer, args.rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in zip(prompts, answers)))
        tokenising = {}
        for num_proc in (1, 2):
            new, tokenising[num_proc] = tokenise(path, tokenizer, num_proc)
    start = time.perf_counter()
    hand = encode_chat(prompts, answers, tokenizer)
    hand_seconds = time.perf_counter() - start
    lengths = new["attention_mask"].sum(-1)
    for i in range(0, args.rows, max(1, args.rows // 100)):  # the same tokens, padded on the other side
        if not torch.equal(new["input_ids"][i, : lengths[i]], hand["input_ids"][i, -lengths[i]:]):
            raise SystemExit(f"row {i}: the new path's tokens differ from encode_chat's; the comparison is void.")

    batches = [b for b, _ in zip(batch_indices(args.rows, args.batch, seed=0), range(args.repeats))]
    seconds = h.interleaved(step_functions(model, hand, new, batches), args.repeats, "cpu", warmup=1)
    epoch_steps = math.ceil(args.rows / args.batch)
    training = epoch_steps * seconds["new_path"]
    used = 1  # train_bridges tokenises in one process (num_proc=None)
    results = {
        "benchmark": "data_path",
        "environment": h.environment(args),
        "setting": {"anchor": args.anchor, "augmenting": args.augmenting, "rows": args.rows, "format": "completion",
                    "batch": args.batch, "repeats": args.repeats, "layer_map": [list(p) for p in cfg.layers],
                    "bridge_params": model.num_bridge_parameters(),
                    "tokens_per_row": {"mean": round(float(lengths.float().mean()), 1), "max": int(lengths.max())}},
        "tokenisation_seconds": {f"num_proc={k}": v for k, v in tokenising.items()},
        "hand_made_tensors_seconds": hand_seconds,
        "step_seconds": seconds,
        "training_it_feeds": {"definition": f"one epoch: ceil({args.rows} / {args.batch}) steps × the median new-path "
                                            f"step (measured on {args.repeats} batches, extrapolated)",
                              "steps": epoch_steps, "seconds": training},
        "tokenisation_over_training": tokenising[used] / training,
        "step_ratio": seconds["new_path"] / seconds["hand_made"],
        "before_over_hand_made": seconds["before"] / seconds["hand_made"],
        "targets": TARGETS,
    }
    ok = lambda value, target: f"{value:.4f} (target ≤ {target:.2f}: {'met' if value <= target else 'NOT met'})"  # noqa: E731
    lines = [
        f"data path, {args.anchor} ← {args.augmenting}, {args.rows} rows (completion format, mean "
        f"{results['setting']['tokens_per_row']['mean']} tokens), batch {args.batch}, fp32 on "
        f"{results['environment']['device_name']}, {torch.get_num_threads()} threads",
        *(f"  tokenise (load_examples + encode + as_tensors), num_proc={k}: {s:8.1f} s" for k, s in tokenising.items()),
        f"  the facts demo's encode_chat on the same rows:            {hand_seconds:8.1f} s",
        *(f"  step {name:<10} {1000 * s:10.1f} ms" for name, s in seconds.items()),
        f"  the training it feeds: {results['training_it_feeds']['definition']} = {training:.0f} s",
        f"tokenisation ÷ training it feeds = {ok(results['tokenisation_over_training'], 0.10)}",
        f"step new path ÷ hand-made tensors = {ok(results['step_ratio'], 1.05)}",
        f"(before the fix: untrimmed rows, logits everywhere ÷ hand-made = {results['before_over_hand_made']:.3f})",
    ]
    h.finish(args, results, lines)


if __name__ == "__main__":
    main()
