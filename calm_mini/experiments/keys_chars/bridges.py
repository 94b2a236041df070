"""The composite of the keys experiment and how its bridges train: the anchor reads its own
tokens, m_A reads the same text as characters (:class:`calm_mini.crosstok.CrossTokenizerModel`),
and the bridges train on the D_C keys alone, with the kit's loop."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...core import compose
from ...crosstok import CrossTokenizerModel
from ...training import encode_examples, train
from .config import KeysCharsConfig
from .data import KeysData


def compose_keys(anchor: PreTrainedModel, augmenting: PreTrainedModel, anchor_tokenizer: PreTrainedTokenizerBase,
                 augmenting_tokenizer: PreTrainedTokenizerBase, cfg: KeysCharsConfig) -> CrossTokenizerModel:
    """The composite across tokenizers; its bridges' initial weights are seeded by ``cfg.bridges.seed``
    (W^O starts at zero, so it starts equal to the anchor)."""
    torch.manual_seed(cfg.bridges.seed)
    return compose(anchor, augmenting, layers=[tuple(p) for p in cfg.layers], recency_bias=cfg.recency_bias,
                   normalize_inputs=cfg.normalize_inputs, anchor_tokenizer=anchor_tokenizer,
                   augmenting_tokenizer=augmenting_tokenizer)


def bridge_data(data: KeysData, tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """D_C in the anchor's tokens: ``prompt digit <eos>`` rows of the D_C keys, right-padded;
    ``input_ids``, ``attention_mask``, ``labels`` (N, T), labels on the digit and the end token.
    No held-out key is in them (the composite decodes them and feeds m_A itself)."""
    return encode_examples(Dataset.from_list(data.dc_rows), tokenizer)


def train_bridges(model: CrossTokenizerModel, data: KeysData, tokenizer: PreTrainedTokenizerBase,
                  cfg: KeysCharsConfig, progress: bool = True) -> list[dict]:
    """Train the bridges on D_C (:func:`bridge_data`) with ``cfg.bridges``; returns the log."""
    return train(model, bridge_data(data, tokenizer), cfg.bridges, progress=progress, desc="bridges")
