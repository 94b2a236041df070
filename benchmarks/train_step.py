"""Training overhead of composition: one bridge-training step against the work it cannot avoid.

    python benchmarks/train_step.py --device cuda --dtype bf16 --anchor smollm2-360m --augmenting smollm2-135m
    python benchmarks/train_step.py --quick --json /tmp/train_step.json      # seconds, CPU

ratio = composed train step ÷ (anchor forward + backward + augmenting forward), all measured in
one run, interleaved, medians of ``--repeats``. Target on a GPU: ≤ 1.10.

- composed train step: forward with labels (loss), backward into the bridges, AdamW step, zero_grad;
- anchor forward + backward: the frozen anchor on the same batch, with the loss's gradient flowing
  back through every layer to the input embeddings (what bridges at the bottom would need; weights
  get no gradients, as in bridge training);
- augmenting forward: the augmenting backbone without gradients (no LM head: the composition
  does not use it).

Models are SmolLM2-shaped with random weights (speed does not depend on the values); bf16 means
bf16 base weights, fp32 bridges, ``torch.autocast`` around the forward passes.
"""

from __future__ import annotations

import _harness as h
import torch


def main() -> None:
    p = h.parser(__doc__, batch=8, length=512, repeats=10)
    h.add_scaling_options(p)
    args = h.settle(p.parse_args())
    model, anchor, augmenting, ids, _, composed_step = h.training_setup(args)
    embed = anchor.get_input_embeddings()

    def anchor_forward_backward():
        with h.autocast(args):
            inputs = embed(ids).detach().requires_grad_()
            loss = anchor(inputs_embeds=inputs, labels=ids).loss
        loss.backward()

    def augmenting_forward():
        with torch.no_grad(), h.autocast(args):
            augmenting.base_model(ids)

    seconds = h.interleaved(
        {"composed_step": composed_step, "anchor_forward_backward": anchor_forward_backward,
         "augmenting_forward": augmenting_forward},
        args.repeats, args.device, warmup=3 if args.compile else 2,
    )  # fmt: skip
    parts = seconds["anchor_forward_backward"] + seconds["augmenting_forward"]
    ratio = seconds["composed_step"] / parts
    tokens = args.batch * args.length
    results = {
        "benchmark": "train_step",
        "environment": h.environment(args),
        "setting": {**h.setting(args, model), "gradient_checkpointing": args.gradient_checkpointing,
                    "compile": args.compile},
        "seconds": seconds,
        "composed_tokens_per_s": tokens / seconds["composed_step"],
        "ratio": ratio,
        "target": {"ratio_at_most": 1.10, "on": "GPU"},
    }  # fmt: skip
    lines = [
        f"train step, {args.anchor} ← {args.augmenting}, {len(model.bridges)} bridges, "
        f"batch {args.batch} × {args.length} tokens, {args.dtype} on {results['environment']['device_name']}",
        *(f"  {name:<26} {1000 * s:10.1f} ms" for name, s in seconds.items()),
        f"  composed tokens/s          {results['composed_tokens_per_s']:10.0f}",
        f"ratio composed step ÷ (anchor fwd+bwd + augmenting fwd) = {h.verdict(ratio, 1.10, at_most=True)}",
    ]
    h.finish(args, results, lines)


if __name__ == "__main__":
    main()
