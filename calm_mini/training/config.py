"""How to train: one frozen dataclass, saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``checkpoint_every=0`` saves only at the end (when an output folder is given).

    Scaling options: ``precision="bf16"`` runs forward and loss under ``torch.autocast`` (the
    trainable weights and AdamW stay float32); ``bucket_by_length`` batches examples of similar
    length and trims each batch's trailing padding; ``gradient_checkpointing`` and ``compile``
    call the composed model's ``gradient_checkpointing_enable()`` / ``compile_bridges()``.
    ``batch_size`` is the global batch: with N processes each trains on batch_size / N.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 0
    precision: str = "fp32"
    bucket_by_length: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1; got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0; got {self.lr}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}: use one of {PRECISIONS}.")
