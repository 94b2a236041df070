"""Overhead of composition, measured in one run (ratios, not absolute times, are the figures).

    python benchmarks/overhead.py [--pairs tiny smollm2] [--new-tokens 256] [--out assets/bench_overhead.json]

Prints JSON with, for each pair:
- forward_ratio: composed forward time ÷ (anchor forward + augmenting forward); target ≤ 1.15;
- decode: cached and uncached composed decoding tokens/s at ``--new-tokens`` greedy tokens and
  their ratio (target ≥ 5), and cached composed tokens/s ÷ the sum-of-parts limit
  1 / (anchor step + augmenting step).
Timings are medians of interleaved repeats; the bridges get random output projections so that
they do real work.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _harness import interleaved

from calm_mini import compose
from calm_mini.models import load, smollm2_folder, tiny


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(pair: str):
    if pair == "tiny":
        anchor = tiny("llama", hidden_size=256, num_layers=8, num_heads=8, vocab_size=1024, max_positions=1024, seed=1)
        augmenting = tiny("llama", hidden_size=128, num_layers=4, num_heads=4, vocab_size=1024, seed=2)
        return anchor, augmenting, 1024
    smollm2_folder()
    anchor, _ = load("smollm2-135m-offline")
    vocab = anchor.config.vocab_size
    augmenting = tiny("llama", hidden_size=192, num_layers=8, num_heads=4, vocab_size=vocab, max_positions=8192, seed=2)
    return anchor, augmenting, vocab


@torch.inference_mode()
def measure(pair: str, batch: int, length: int, new_tokens: int, repeats: int) -> dict:
    anchor, augmenting, vocab = build(pair)
    model = compose(anchor, augmenting, layers=4)
    torch.manual_seed(0)
    for bridge in model.bridges:
        bridge.out.weight.normal_(0, 0.02)
    ids = torch.randint(3, vocab, (batch, length))
    t = interleaved(
        {"composed": lambda: model(ids), "anchor": lambda: anchor(ids), "augmenting": lambda: augmenting(ids)},
        repeats,
    )
    prompt = ids[:1, :16]
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    cached = median_time(lambda: model.generate(prompt, **gen), 3)
    uncached = median_time(lambda: model.generate(prompt, use_cache=False, **gen), 1)
    anchor_cached = median_time(lambda: anchor.generate(prompt, **gen), 3)
    augmenting_cached = median_time(lambda: augmenting.generate(prompt, **gen), 3)
    return {
        "pair": pair,
        "anchor_params": sum(p.numel() for p in anchor.parameters()),
        "augmenting_params": sum(p.numel() for p in augmenting.parameters()),
        "bridges": len(model.bridges),
        "bridge_params": model.num_bridge_parameters(),
        "forward": {
            "batch": batch,
            "length": length,
            "seconds": t,
            "ratio": t["composed"] / (t["anchor"] + t["augmenting"]),
        },
        "decode": {
            "new_tokens": new_tokens,
            "cached_tokens_per_s": new_tokens / cached,
            "uncached_tokens_per_s": new_tokens / uncached,
            "cached_over_uncached": uncached / cached,
            "cached_over_sum_of_parts": (anchor_cached + augmenting_cached) / cached,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": [measure(p, args.batch, args.length, args.new_tokens, args.repeats) for p in args.pairs],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
