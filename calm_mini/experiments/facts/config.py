"""The settings of the facts demo: its augmenting model m_A and everything else."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ...training import TrainConfig
from ..reports import NamedSettings
from .world import WorldConfig


@dataclass(frozen=True)
class AugmentingConfig:
    """m_A: a Llama as wide as the anchor (so it can take the anchor's embeddings), shallow."""

    n_layers: int = 2
    n_heads: int = 9
    n_kv_heads: int = 3
    d_ff: int = 768
    anchor_embeddings: bool = True  # copy the anchor's token embeddings (tied output layer) and freeze them
    # batches of similar length (bucket_by_length): faster on a CPU than padding to the longest
    train: TrainConfig = TrainConfig(steps=500, batch_size=32, lr=2e-3, warmup_steps=20, log_every=25,
                                     bucket_by_length=True)


@dataclass(frozen=True)
class FactsConfig(NamedSettings):
    """Everything that decides the demo; ``classroom()`` trains on 2 CPU cores in minutes."""

    SETTINGS = ("classroom", "full")

    setting: str = "classroom"
    world: WorldConfig = field(default_factory=WorldConfig.classroom)
    augmenting: AugmentingConfig = AugmentingConfig()
    layers: tuple[tuple[int, int], ...] = ((1, 27), (1, 29))  # (m_A layer, anchor layer), 0-based
    recency_bias: bool = True
    normalize_inputs: bool = True  # bridges in units of the states' RMS (see calm_mini.core.bridge)
    # No length buckets for the bridges: they would split questions from ordinary rows (the README
    # gives the validation scores of both).
    bridges: TrainConfig = TrainConfig(steps=400, batch_size=16, lr=2e-3, warmup_steps=10, log_every=10)
    ordinary_fraction: float = 0.25  # share of bridge-training rows that are ordinary chat with the anchor's answers
    ordinary_generated: int = 56  # ordinary prompts drawn from patterns, beside the 18 fixed training ones
    ordinary_new_tokens: int = 24
    eval_batch_size: int = 32
    threads: int | None = None  # torch threads for the run; None leaves the current setting
    feature_cache: bool = True  # compute the anchor's states below the lowest bridge once, not at every step
    value_targets: str = "augmenting"  # value tokens learn m_A's distribution ("augmenting") or the true value ("labels")
    ordinary_targets: str = "anchor"  # ordinary answers learn the anchor's distribution ("anchor") or its tokens ("labels")
    target_top_k: int = 64  # words kept of a soft target's distribution

    def __post_init__(self) -> None:
        for name, allowed in (("value_targets", ("augmenting", "labels")), ("ordinary_targets", ("anchor", "labels"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}.")
        if not 0 <= self.ordinary_fraction < 1:
            raise ValueError(f"ordinary_fraction={self.ordinary_fraction}: the share of ordinary chat rows must be in "
                             f"[0, 1) (some rows must be questions about people), e.g. 0.25.")

    @classmethod
    def full(cls, **overrides) -> FactsConfig:
        """1000 people, deeper m_A, more bridges and steps: for a GPU."""
        base = cls(
            setting="full", world=WorldConfig.full(),
            augmenting=AugmentingConfig(n_layers=4, train=replace(AugmentingConfig.train, steps=4000, batch_size=64)),
            layers=((3, 23), (3, 25), (3, 27), (3, 29)),
            bridges=TrainConfig(steps=1500, batch_size=32, lr=1e-3, warmup_steps=50, log_every=50),
            ordinary_new_tokens=48, eval_batch_size=64,
        )
        return replace(base, **overrides)
