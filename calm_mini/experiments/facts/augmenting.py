"""The augmenting model m_A of the facts demo: a small Llama with the anchor's tokenizer and
frozen embeddings, trained from scratch on fact statements about every person (loss on the
value tokens only), and cached."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ...models import cached_model, default_cache_dir, llama_config, settings_key
from ...training import TargetsOnlyLoss, pad, train
from .config import AugmentingConfig
from .world import World, WorldConfig, augmenting_corpus

CACHE_VERSION = 1  # bump when training code changes what a cached augmenting model would be


# ---------------------------------------------------------------------- the augmenting model m_A
def encode_corpus(corpus: Dataset, tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """Tokenize the augmenting corpus with right padding; labels only on the target spans.

    Returns ``input_ids``, ``attention_mask``, ``labels``, each (N, T); a token is a label when
    its characters overlap a target span (`` Tavrik.``), -100 elsewhere.
    """
    encoded = tokenizer(list(corpus["text"]), return_offsets_mapping=True, add_special_tokens=False)
    ids, mask = pad(encoded["input_ids"], tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for i, (row, offsets, spans) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], corpus["targets"])):
        for t, (start, end) in enumerate(offsets):
            if any(end > a and start < b for a, b in spans):
                labels[i, t] = row[t]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def new_augmenting(anchor: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: AugmentingConfig) -> LlamaForCausalLM:
    """A fresh m_A as wide as the anchor, with the anchor's vocabulary; with
    ``cfg.anchor_embeddings`` its (tied) embeddings are a frozen copy of the anchor's."""
    a = anchor.config
    config = llama_config(a.vocab_size, a.hidden_size, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.n_kv_heads,
                          max_positions=2048, rope_theta=getattr(a, "rope_theta", 10000.0), rms_norm_eps=a.rms_norm_eps,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=a.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(cfg.train.seed)
    model = LlamaForCausalLM(config)
    if cfg.anchor_embeddings:
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(anchor.get_input_embeddings().weight)
        model.model.embed_tokens.weight.requires_grad_(False)  # the tied output layer with it
    return model


def augmenting_cache_key(world: WorldConfig, cfg: AugmentingConfig, anchor: PreTrainedModel) -> str:
    """Folder name of a trained m_A: a hash of the world, m_A's settings and the anchor's identity."""
    return settings_key("facts-augmenting", {
        "world": world.to_dict(), "augmenting": asdict(cfg), "version": CACHE_VERSION,
        "anchor": [anchor.config.model_type, anchor.config.hidden_size, anchor.config.vocab_size,
                   getattr(anchor.config, "name_or_path", "")],
    })


def load_or_train_augmenting(
    world: World, anchor: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: AugmentingConfig,
    cache_dir: str | Path | None = None, progress: bool = True,
) -> tuple[LlamaForCausalLM, dict]:
    """m_A from the cache, or trained on the world's corpus (all people) and cached atomically.

    Returns (m_A in eval mode, info with ``train_seconds`` and ``final_loss``; ``cached`` says
    whether it was loaded).
    """
    folder = Path(cache_dir or default_cache_dir()) / augmenting_cache_key(world.config, cfg, anchor)

    def train_model():
        model = new_augmenting(anchor, tokenizer, cfg)
        data = encode_corpus(augmenting_corpus(world), tokenizer)
        log = train(TargetsOnlyLoss(model), data, cfg.train, progress=progress, desc="augmenting")
        return model, {"world": world.config.to_dict(), "augmenting": asdict(cfg), "final_loss": log[-1]["loss"],
                       "log": log}

    model, info, cached = cached_model(folder, train_model)
    return model, {**info, "cached": cached}
