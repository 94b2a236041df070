"""The two frozen base models of the key-value experiment, trained from scratch on CPU.

* anchor m_B — a small Llama trained on NUM-MATH (it never sees a key);
* augmenting m_A — a smaller Llama that memorises KV-SUBS over all keys.

Trained models are kept in the kit's model cache (:mod:`calm_mini.models.cache`) under a hash
of the data and model settings, and reused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from ...models.builders import llama_config
from ...models.cache import cached_model, default_cache_dir, settings_key
from ...training import TrainConfig, encode_examples, train
from .data import KVConfig, KVData, build_kv_splits

CACHE_VERSION = 1  # bump when training code changes what a cached model would be
# role -> the split it trains on; "vanilla" is the augmenting architecture trained on NUM-MATH
# (a general model that never saw the keys), for the ablations.
ROLES = {"anchor": "anchor_train", "augmenting": "augmenting_train", "vanilla": "anchor_train"}
# How the base models train unless told otherwise (AdamW, linear warm-up, cosine decay).
BASE_TRAINING = TrainConfig(steps=300, batch_size=64, lr=3e-3, warmup_steps=30, weight_decay=0.1)
# The classroom anchor learns arithmetic on two or three operands: it needs more steps than m_A.
ANCHOR_TRAINING = replace(BASE_TRAINING, steps=1000)


@dataclass(frozen=True)
class BaseModelConfig:
    """Size of a tiny Llama, and how to train it (``train``; its seed also seeds the weights)."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    answer_only_loss: bool = True
    train: TrainConfig = field(default_factory=lambda: BASE_TRAINING)

    @classmethod
    def anchor_classroom(cls, **overrides) -> BaseModelConfig:
        """m_B for ``KVConfig.classroom()``: 4 layers, d=128, 4 heads, ``ANCHOR_TRAINING``."""
        return replace(cls(train=ANCHOR_TRAINING), **overrides)

    @classmethod
    def augmenting_classroom(cls, **overrides) -> BaseModelConfig:
        """m_A for ``KVConfig.classroom()``: 2 layers, d=64, 4 heads."""
        return replace(cls(n_layers=2, d_model=64, n_heads=4, d_ff=256), **overrides)

    def llama_config(self, tokenizer: PreTrainedTokenizerBase):
        """The Hugging Face config of this model for ``tokenizer``'s vocabulary."""
        return llama_config(len(tokenizer), self.d_model, self.n_layers, self.n_heads, self.d_ff, tokenizer=tokenizer)


# ---------------------------------------------------------------- training


def train_causal_lm(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: BaseModelConfig,
    progress: bool = True, desc: str = "train",
) -> tuple[LlamaForCausalLM, list[dict]]:
    """Train a fresh tiny Llama on ``dataset`` (columns ``prompt``, ``answer``), seeded.

    Returns the model in eval mode and the training log (see :func:`calm_mini.training.train`).
    """
    torch.manual_seed(cfg.train.seed)
    model = LlamaForCausalLM(cfg.llama_config(tokenizer))
    data = encode_examples(dataset, tokenizer, cfg.answer_only_loss)
    # one process trains a base model for all (see build_base_models), so never distributed
    log = train(model, data, cfg.train, progress=progress, desc=desc, distributed=False)
    return model.eval(), log


# ---------------------------------------------------------------- cache


def cache_key(role: str, kv_cfg: KVConfig, model_cfg: BaseModelConfig) -> str:
    """Folder name for a trained model: role plus a hash of every setting that shapes it."""
    return settings_key(role, {"role": role, "kv": kv_cfg.to_dict(), "model": asdict(model_cfg),
                               "version": CACHE_VERSION})


def load_or_train(
    role: str, data: KVData, model_cfg: BaseModelConfig, cache_dir: str | Path | None = None,
    progress: bool = True,
) -> LlamaForCausalLM:
    """The ``role`` model (``"anchor"`` or ``"augmenting"``) from the cache, training it on
    its split of ``data`` first if it is not there."""
    if role not in ROLES:
        raise ValueError(f"role={role!r}: use one of {sorted(ROLES)}.")
    folder = Path(cache_dir or default_cache_dir()) / cache_key(role, data.config, model_cfg)

    def train_model():
        model, log = train_causal_lm(data.splits[ROLES[role]], data.tokenizer, model_cfg, progress, desc=role)
        return model, {"role": role, "kv_config": data.config.to_dict(), "model_config": asdict(model_cfg),
                       "final_loss": log[-1]["loss"]}

    return cached_model(folder, train_model, data.tokenizer)[0]


@dataclass
class BaseModels:
    """The frozen pair and the data they were trained on."""

    anchor: LlamaForCausalLM
    augmenting: LlamaForCausalLM
    data: KVData


def build_base_models(
    kv_cfg: KVConfig | None = None, anchor_cfg: BaseModelConfig | None = None,
    augmenting_cfg: BaseModelConfig | None = None, cache_dir: str | Path | None = None,
    progress: bool = True,
) -> BaseModels:
    """Data, anchor and augmenting model for the key-value experiment (classroom defaults)."""
    data = build_kv_splits(kv_cfg or KVConfig.classroom())
    anchor = load_or_train("anchor", data, anchor_cfg or BaseModelConfig.anchor_classroom(),
                           cache_dir, progress)
    augmenting = load_or_train("augmenting", data,
                               augmenting_cfg or BaseModelConfig.augmenting_classroom(),
                               cache_dir, progress)
    return BaseModels(anchor, augmenting, data)
