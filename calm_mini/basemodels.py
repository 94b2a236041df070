"""The two frozen base models of the key-value experiment, trained from scratch on CPU.

* anchor m_B — a small Llama trained on NUM-MATH (it never sees a key);
* augmenting m_A — a smaller Llama that memorises KV-SUBS over all keys.

Trained models are cached with ``save_pretrained`` in ``$CALM_MINI_CACHE`` (default
``~/.cache/calm_mini``) under a hash of the data and model settings, and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from .data.kv import KVConfig, KVData, build_kv_splits
from .files import atomic_folder
from .train import TrainConfig, encode_examples, train

CACHE_VERSION = 1  # bump when training code changes what a cached model would be
# role -> the split it trains on; "vanilla" is the augmenting architecture trained on NUM-MATH
# (a general model that never saw the keys), for the ablations.
ROLES = {"anchor": "anchor_train", "augmenting": "augmenting_train", "vanilla": "anchor_train"}


@dataclass(frozen=True)
class BaseModelConfig:
    """Size of a tiny Llama and how to train it (AdamW, linear warm-up, cosine decay)."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    answer_only_loss: bool = True
    seed: int = 0

    @classmethod
    def anchor_classroom(cls, **overrides) -> BaseModelConfig:
        """m_B for ``KVConfig.classroom()``: 4 layers, d=128, 4 heads."""
        return replace(cls(), **overrides)

    @classmethod
    def augmenting_classroom(cls, **overrides) -> BaseModelConfig:
        """m_A for ``KVConfig.classroom()``: 2 layers, d=64, 4 heads."""
        return replace(cls(n_layers=2, d_model=64, n_heads=4, d_ff=256), **overrides)

    def train_config(self) -> TrainConfig:
        """The optimisation settings, for :func:`calm_mini.train.train`."""
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup_steps,
                           weight_decay=self.weight_decay, seed=self.seed)

    def llama_config(self, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
        """The Hugging Face config of this model for ``tokenizer``'s vocabulary."""
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=self.d_model, intermediate_size=self.d_ff,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_heads, max_position_embeddings=128,
            tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )


# ---------------------------------------------------------------- training


def train_causal_lm(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: BaseModelConfig,
    progress: bool = True, desc: str = "train",
) -> tuple[LlamaForCausalLM, list[dict]]:
    """Train a fresh tiny Llama on ``dataset`` (columns ``prompt``, ``answer``), seeded.

    Returns the model in eval mode and the training log (see :func:`calm_mini.train.train`).
    """
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(cfg.llama_config(tokenizer))
    data = encode_examples(dataset, tokenizer, cfg.answer_only_loss)
    # one process trains a base model for all (see build_base_models), so never distributed
    log = train(model, data, cfg.train_config(), progress=progress, desc=desc, distributed=False)
    return model.eval(), log


# ---------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$CALM_MINI_CACHE`` if set, else ``~/.cache/calm_mini``."""
    return Path(os.environ.get("CALM_MINI_CACHE", Path.home() / ".cache" / "calm_mini"))


def settings_key(prefix: str, settings: dict) -> str:
    """A cache folder name: ``prefix`` plus a hash of the JSON ``settings``."""
    return f"{prefix}-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]}"


def cache_key(role: str, kv_cfg: KVConfig, model_cfg: BaseModelConfig) -> str:
    """Folder name for a trained model: role plus a hash of every setting that shapes it."""
    return settings_key(role, {"role": role, "kv": kv_cfg.to_dict(), "model": asdict(model_cfg),
                               "version": CACHE_VERSION})


def cached_model(
    folder: Path, train_model: Callable[[], tuple[LlamaForCausalLM, dict]],
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[LlamaForCausalLM, dict, bool]:
    """The model saved in ``folder``, or ``train_model()``'s, saved there atomically (weights,
    ``tokenizer`` if given, and its info dict as ``calm_mini.json``, plus ``train_seconds``).

    Returns:
        (model in eval mode, info, whether it came from the cache).
    """
    info_file = folder / "calm_mini.json"
    if info_file.exists():
        return LlamaForCausalLM.from_pretrained(folder).eval(), json.loads(info_file.read_text()), True
    start = time.perf_counter()
    model, info = train_model()
    info = {**info, "train_seconds": round(time.perf_counter() - start, 1)}
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "calm_mini.json").write_text(json.dumps(info, indent=2))
    return model.eval(), info, False


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
