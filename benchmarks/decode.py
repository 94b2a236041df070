"""Decoding speed of composition against the sum-of-parts limit.

    python benchmarks/decode.py --device cuda --dtype bf16 --anchor smollm2-360m --augmenting smollm2-135m
    python benchmarks/decode.py --quick --json /tmp/decode.json      # seconds, CPU

Each model decodes ``--new-tokens`` tokens one at a time with its KV cache after a prompt of
``--length`` tokens (the prefill is not timed). Every step feeds the same pre-drawn tokens to
all three, so they do the same work whatever the (random) weights predict:

- composed: the composed model, cached (anchor cache + augmenting cache + bridges' keys/values);
- anchor: the anchor alone, cached;
- augmenting: the augmenting backbone alone, cached (no LM head: the composition does not use it).

ratio = composed tokens/s ÷ 1 / (anchor step + augmenting step), i.e. (anchor + augmenting
seconds) ÷ composed seconds. 1.0 means composition costs nothing beyond running both models.
Target on a GPU: ≥ 0.85. Medians of ``--repeats`` interleaved runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import _harness as h
import torch


@torch.no_grad()
def decode_seconds(step: Callable, prompt: torch.Tensor, tokens: torch.Tensor, args) -> float:
    """Seconds to decode ``tokens`` (B, N) one step at a time after prefilling ``prompt`` (B, T).

    ``step(ids, cache)`` is one cached call returning an output with ``.cache``; the prefill
    (``cache=None``) is not timed.
    """
    with h.autocast(args):
        cache = step(prompt, None).cache
        h.synchronize(args.device)
        start = time.perf_counter()
        for i in range(tokens.shape[1]):
            cache = step(tokens[:, i : i + 1], cache).cache
        h.synchronize(args.device)
    return time.perf_counter() - start


def main() -> None:
    p = h.parser(__doc__, batch=1, length=128, repeats=3)
    p.add_argument("--new-tokens", type=int, default=256, help="decoded tokens per run")
    args = h.settle(p.parse_args())
    if args.quick:
        args.new_tokens = min(args.new_tokens, 8)
    model, anchor, augmenting = h.build_composition(args)
    ids = h.token_ids(anchor.config.vocab_size, args.batch, args.length + args.new_tokens, args.device)
    prompt, tokens = ids[:, : args.length], ids[:, args.length :]
    steps = {
        "composed": lambda x, cache: model(x, cache=cache, use_cache=True),
        "anchor": lambda x, cache: anchor(x, cache=cache, use_cache=True),
        "augmenting": lambda x, cache: augmenting.base_model(x, cache=cache, use_cache=True),
    }
    for step in steps.values():  # warm-up
        decode_seconds(step, prompt, tokens[:, :4], args)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            samples[name].append(decode_seconds(step, prompt, tokens, args))
    seconds = {name: statistics.median(s) for name, s in samples.items()}
    ms_per_step = {name: 1000 * s / args.new_tokens for name, s in seconds.items()}
    ratio = (seconds["anchor"] + seconds["augmenting"]) / seconds["composed"]
    results = {
        "benchmark": "decode",
        "environment": h.environment(args),
        "setting": {**h.setting(args, model), "new_tokens": args.new_tokens},
        "ms_per_step": ms_per_step,
        "tokens_per_s": {name: args.batch * args.new_tokens / s for name, s in seconds.items()},
        "sum_of_parts_tokens_per_s": args.batch * args.new_tokens / (seconds["anchor"] + seconds["augmenting"]),
        "ratio": ratio,
        "target": {"ratio_at_least": 0.85, "on": "GPU"},
    }
    lines = [
        f"cached decoding, {args.anchor} ← {args.augmenting}, {len(model.bridges)} bridges, batch {args.batch}, "
        f"prompt {args.length} + {args.new_tokens} new tokens, {args.dtype} on {results['environment']['device_name']}",
        *(
            f"  {name:<12} {ms:8.2f} ms/step {results['tokens_per_s'][name]:10.1f} tokens/s"
            for name, ms in ms_per_step.items()
        ),
        f"  sum of parts {1000 / args.new_tokens * (seconds['anchor'] + seconds['augmenting']):8.2f} ms/step "
        f"{results['sum_of_parts_tokens_per_s']:10.1f} tokens/s",
        f"ratio composed tokens/s ÷ sum-of-parts limit = {h.verdict(ratio, 0.85, at_most=False)}",
    ]
    h.finish(args, results, lines)


if __name__ == "__main__":
    main()
