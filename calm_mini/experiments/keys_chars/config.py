"""The settings of the cross-tokenizer keys experiment: the keys and their split, the character
model m_A, the bridges into the anchor, and how everything trains."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ...training import TrainConfig
from ..kv.base_models import BASE_TRAINING, BaseModelConfig
from ..reports import NamedSettings

# How the composite is asked: a key, a phrase m_A never saw, then the digit. "{k}" is the key.
TEMPLATES = ("{k}: secret digit ", "{k}: number ", "{k}: code ")
CONSONANTS, VOWELS = "bcdfghjklmnpqrstvwxz", "aeiou"


@dataclass(frozen=True)
class KeysConfig:
    """Made-up keys (consonant-vowel-consonant-vowel, e.g. ``bavo``), each with a digit 0–9.

    ``dc_fraction`` of the keys (shuffled) form D_C, on which the bridges train; the rest are
    held out. ``eval_keys`` held-out keys (and as many D_C keys) are scored, each in every
    template. A key that occurs inside a template's text is never drawn.
    """

    n_keys: int = 200
    dc_fraction: float = 0.5
    templates: tuple[str, ...] = TEMPLATES
    eval_keys: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        n_dc = int(self.dc_fraction * self.n_keys)
        if not 1 <= n_dc < self.n_keys:
            raise ValueError(f"n_keys={self.n_keys} with dc_fraction={self.dc_fraction} gives {n_dc} D_C keys: "
                             "need at least one D_C key and one held-out key.")
        if self.n_keys > (len(CONSONANTS) * len(VOWELS)) ** 2 // 2:
            raise ValueError(f"n_keys={self.n_keys}: at most {(len(CONSONANTS) * len(VOWELS)) ** 2 // 2} keys.")
        if not self.templates or any("{k}" not in t for t in self.templates):
            raise ValueError(f"templates={self.templates!r}: each must contain '{{k}}', where the key goes.")
        if self.eval_keys < 1:
            raise ValueError(f"eval_keys={self.eval_keys} must be ≥ 1.")

    @property
    def n_dc_keys(self) -> int:
        return int(self.dc_fraction * self.n_keys)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KeysCharsConfig(NamedSettings):
    """Everything that decides the experiment; ``classroom()`` runs on a CPU in minutes.

    ``layers`` are (m_A layer, anchor layer) pairs, 0-based, for SmolLM2-135M's 30 layers: a
    smaller anchor needs its own (the tests pass them).
    """

    SETTINGS = ("classroom", "full")

    setting: str = "classroom"
    keys: KeysConfig = field(default_factory=KeysConfig)
    # m_A: a 2-layer Llama over characters, trained on "key:digit" for every key
    augmenting: BaseModelConfig = field(default_factory=lambda: BaseModelConfig(
        n_layers=2, d_model=128, n_heads=4, d_ff=512, train=replace(BASE_TRAINING, steps=400, batch_size=64)))
    layers: tuple[tuple[int, int], ...] = ((1, 25), (1, 29))
    recency_bias: bool = False
    normalize_inputs: bool = False
    bridges: TrainConfig = TrainConfig(steps=150, batch_size=8, lr=3e-3, warmup_steps=10, log_every=10)
    eval_batch_size: int = 64

    @classmethod
    def full(cls, **overrides) -> KeysCharsConfig:
        """Ten times the bridge steps, twice the batch, 100 scored keys: for a GPU."""
        base = cls(setting="full", keys=KeysConfig(eval_keys=100),
                   bridges=TrainConfig(steps=1500, batch_size=16, lr=1e-3, warmup_steps=10, log_every=10))
        return replace(base, **overrides)
