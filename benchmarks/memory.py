"""Peak memory of training bridges against running the anchor alone (inference), on one batch.

    python benchmarks/memory.py --device cuda --dtype bf16 --anchor smollm2-360m --augmenting smollm2-135m
    python benchmarks/memory.py --quick --json /tmp/memory.json      # seconds, CPU

- bridge training: one composed train step (forward with labels, backward, AdamW step), measured
  after a first step so that AdamW's moments exist, as in steady training;
- anchor inference: the anchor alone, forward without gradients, on the same batch.

Each peak is the memory held before the step (weights, bridges, AdamW moments: counted from the
tensors themselves) plus the peak allocated during it: ``torch.cuda.max_memory_allocated`` on a
GPU; on a CPU, the bytes of live tensor storages counted by a ``TorchDispatchMode`` (exact tensor
bytes; process RSS would mix in the allocator's caching). For catalogue models in bf16 the
figure is compared with :func:`calm_mini.models.catalogue.estimate_training_memory`.
"""

from __future__ import annotations

import _harness as h
import torch

from calm_mini.models.catalogue import CARDS, GIB, estimate_training_memory


def estimate(args, num_bridges: int) -> dict | None:
    """The catalogue's estimate for this setting, when it applies (catalogue models, bf16)."""
    if args.dtype != "bf16" or args.anchor not in CARDS or args.augmenting not in CARDS:
        return None
    est = estimate_training_memory(
        args.anchor, args.augmenting, args.batch, args.length, num_bridges, args.gradient_checkpointing
    )
    return {"total_bytes": est.total, "weights": est.weights, "bridges": est.bridges,
            "activations": est.activations, "logits": est.logits}  # fmt: skip


def main() -> None:
    p = h.parser(__doc__, batch=8, length=512, repeats=1)
    h.add_scaling_options(p)
    args = h.settle(p.parse_args())
    model, anchor, augmenting, ids, optimizer, composed_step = h.training_setup(args)
    composed_step()  # AdamW's moments now exist
    held = {"anchor": h.tensor_bytes(anchor), "augmenting": h.tensor_bytes(augmenting),
            "bridges_and_adamw": h.tensor_bytes(model.bridges, optimizer)}  # fmt: skip
    with h.peak_memory(args.device) as train:
        composed_step()
    with h.peak_memory(args.device) as infer, torch.no_grad(), h.autocast(args):
        anchor(ids)
    training = sum(held.values()) + train["peak_bytes"]
    inference = held["anchor"] + infer["peak_bytes"]
    predicted = estimate(args, len(model.bridges))
    results = {
        "benchmark": "memory",
        "environment": h.environment(args),
        "setting": {**h.setting(args, model), "gradient_checkpointing": args.gradient_checkpointing,
                    "compile": args.compile},
        "method": train["method"],
        "held_bytes": held,
        "peak_above_held_bytes": {"training": train["peak_bytes"], "inference": infer["peak_bytes"]},
        "peak_bytes": {"training": training, "inference": inference},
        "training_over_inference": training / inference,
        "estimate": predicted,
        "measured_over_estimate": training / predicted["total_bytes"] if predicted else None,
    }  # fmt: skip
    mib = 2**20
    lines = [
        f"peak memory, {args.anchor} ← {args.augmenting}, {len(model.bridges)} bridges, batch {args.batch} × "
        f"{args.length} tokens, {args.dtype} on {results['environment']['device_name']} ({train['method']})",
        f"  held: anchor {held['anchor'] / mib:.1f} MiB, augmenting {held['augmenting'] / mib:.1f} MiB, "
        f"bridges + AdamW {held['bridges_and_adamw'] / mib:.1f} MiB",
        f"  anchor inference   {inference / mib:10.1f} MiB  (+{infer['peak_bytes'] / mib:.1f} during the forward)",
        f"  bridge training    {training / mib:10.1f} MiB  (+{train['peak_bytes'] / mib:.1f} during the step)",
        f"training ÷ inference = {results['training_over_inference']:.2f}",
    ]
    if predicted:
        lines.append(
            f"estimate_training_memory: {predicted['total_bytes'] / GIB:.3f} GiB; measured ÷ estimate = "
            f"{results['measured_over_estimate']:.2f}"
        )
    h.finish(args, results, lines)


if __name__ == "__main__":
    main()
