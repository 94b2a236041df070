"""The augmenting model m_A of the keys experiment: a tiny Llama over characters
(:func:`calm_mini.crosstok.char_tokenizer`) that memorises ``key:digit`` for every key, trained
from scratch and kept in the kit's model cache (:mod:`calm_mini.models.cache`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from ...crosstok import char_tokenizer
from ...crosstok.tokenizers import identity
from ...models import cached_model, default_cache_dir, settings_key
from ..kv.base_models import BaseModelConfig, train_causal_lm
from .data import KeysData

CACHE_VERSION = 1  # bump when training code changes what a cached m_A would be


def augmenting_cache_key(data: KeysData, cfg: BaseModelConfig, tokenizer: PreTrainedTokenizerFast) -> str:
    """Folder name of a trained m_A: a hash of its training rows, its settings and its tokenizer."""
    rows = sorted(zip(data.facts["prompt"], data.facts["answer"]))
    return settings_key("keys-chars-augmenting", {"rows": rows, "model": asdict(cfg), "version": CACHE_VERSION,
                                                  "tokenizer": identity(tokenizer)["fingerprint"]})


def load_or_train_augmenting(
    data: KeysData, cfg: BaseModelConfig, tokenizer: PreTrainedTokenizerFast | None = None,
    cache_dir: str | Path | None = None, progress: bool = True,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict]:
    """m_A from the cache, or trained on ``data.facts`` (every key; loss on the digit and the
    end token) and cached atomically.

    Args:
        tokenizer: m_A's tokenizer; default :func:`char_tokenizer` (one token per character).
    Returns:
        (m_A in eval mode on the CPU, its tokenizer, info: ``final_loss``, ``train_seconds``,
        ``cached`` — whether it was loaded).
    """
    tokenizer = tokenizer or char_tokenizer()
    folder = Path(cache_dir or default_cache_dir()) / augmenting_cache_key(data, cfg, tokenizer)

    def train_model():
        model, log = train_causal_lm(data.facts, tokenizer, cfg, progress, desc="character model")
        return model, {"keys": data.config.to_dict(), "model_config": asdict(cfg), "final_loss": log[-1]["loss"]}

    model, info, cached = cached_model(folder, train_model, tokenizer)
    return model, tokenizer, {**info, "cached": cached}
