"""``compose()``: build a composition from two (or more) base models.

The factory stands outside the model classes (as peft's ``get_peft_model``): it checks the
models, resolves the layer maps, writes the :class:`CALMConfig` and builds the registered
variant — the shared-token :class:`ComposedModel`, or the cross-tokenizer one when tokenizers
are given.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .composed import ComposedModel
from .config import SHARED_TOKENS, CALMConfig, variant_class
from .layers import LayerSpec, ModelShape, resolve_layer_map

CROSS_TOKENIZER = "cross_tokenizer"


def compose(
    anchor: PreTrainedModel,
    augmenting: PreTrainedModel | Sequence[PreTrainedModel],
    layers: LayerSpec | Sequence[LayerSpec] = 4,
    num_heads: int | None = None,
    check_vocab: bool = True,
    anchor_layers_path: str | None = None,
    augmenting_layers_path: str | None | Sequence[str | None] = None,
    recency_bias: bool = False,
    bridge_dtype: torch.dtype = torch.float32,
    normalize_inputs: bool = False,
    anchor_tokenizer: PreTrainedTokenizerBase | None = None,
    augmenting_tokenizer: PreTrainedTokenizerBase | None = None,
    check_text: bool = True,
) -> ComposedModel:
    """Compose a frozen anchor with frozen augmenting model(s) through new bridges.

    Args:
        anchor: the capable model m_B (any HF decoder-only causal LM).
        augmenting: the specialised model m_A, or a list of them.
        layers: which layers to join, per augmenting model (one spec for all, or a list with
            one per model): an int ``k`` (every k-th augmenting layer, the paper's default 4),
            ``Evenly(n)``, a ``LayerMap``, or explicit ``[(augmenting_layer, anchor_layer), …]``
            pairs of 0-based layer outputs.
        num_heads: cross-attention heads; default the anchor's.
        check_vocab: require equal vocabulary sizes (both models read the same token ids).
            Turn off only if the tokenizers are identical and just the embedding padding differs.
        anchor_layers_path, augmenting_layers_path: attribute paths of the decoder layers for
            architectures the kit cannot find on its own (e.g. ``"model.layers"``).
        recency_bias: a learned per-head bias on the distance between anchor and augmenting
            positions (the kit's addition; see :mod:`calm_mini.core.bridge`).
        bridge_dtype: the bridges' parameter dtype; float32 also for bfloat16 base models
            (trainable weights and AdamW need the precision).
        normalize_inputs: RMS-normalise each bridge's inputs and scale its output by the anchor
            state's RMS (see :mod:`calm_mini.core.bridge`).
        anchor_tokenizer, augmenting_tokenizer: give both to compose models that tokenize
            differently (one augmenting model; see :mod:`calm_mini.crosstok`).
        check_text: with tokenizers, require each to give back a probe text unchanged.
    Returns:
        A :class:`ComposedModel` equal to the anchor until its bridges are trained.
    """
    augmenting = list(augmenting) if isinstance(augmenting, (list, tuple, nn.ModuleList)) else [augmenting]
    cross = anchor_tokenizer is not None or augmenting_tokenizer is not None
    _check_causal_lm(anchor, "anchor")
    for m in augmenting:
        _check_causal_lm(m, "augmenting")
        if m is anchor:
            raise ValueError("The anchor and the augmenting model must be different model objects.")
        vocab, own = anchor.config.get_text_config().vocab_size, m.config.get_text_config().vocab_size
        if check_vocab and not cross and own != vocab:
            raise ValueError(
                f"The anchor's vocabulary ({vocab}) differs from the augmenting model's ({own}): both read the same "
                "token ids, so they need the same tokenizer. If only the embedding padding differs, pass "
                "check_vocab=False; for different tokenizers pass anchor_tokenizer=… and augmenting_tokenizer=….")
    paths = (list(augmenting_layers_path) if isinstance(augmenting_layers_path, (list, tuple))
             else [augmenting_layers_path] * len(augmenting))
    anchor_shape = ModelShape.of(anchor, anchor_layers_path)
    shapes = tuple(ModelShape.of(m, p) for m, p in zip(augmenting, paths))
    specs = _per_model_specs(layers, len(augmenting))
    config = CALMConfig(
        anchor=anchor_shape, augmenting=shapes,
        layer_maps=tuple(resolve_layer_map(spec, shape, anchor_shape) for spec, shape in zip(specs, shapes)),
        num_heads=num_heads or anchor_shape.num_heads, recency_bias=recency_bias, normalize_inputs=normalize_inputs,
        bridge_dtype=str(bridge_dtype).removeprefix("torch."),
        layers_paths={"anchor": anchor_layers_path, "augmenting": paths},
        variant=CROSS_TOKENIZER if cross else SHARED_TOKENS,
    )
    options = dict(anchor_tokenizer=anchor_tokenizer, augmenting_tokenizer=augmenting_tokenizer,
                   check_text=check_text) if cross else {}
    return variant_class(config.variant)(anchor, augmenting, config, **options)


def _check_causal_lm(model: nn.Module, role: str) -> None:
    if not isinstance(model, PreTrainedModel) or not model.can_generate():
        raise TypeError(f"The {role} model must be a Hugging Face decoder-only causal LM (AutoModelForCausalLM); "
                        f"got {type(model).__name__}.")
    if getattr(model.config, "is_encoder_decoder", False):
        raise TypeError(f"The {role} model {type(model).__name__} is an encoder-decoder; CALM composes decoder-only LMs.")


def _is_pair(p) -> bool:
    return isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) for x in p)


def _per_model_specs(layers, n_models: int) -> list:
    """One layer spec per augmenting model: a list of specs (one each) or one spec for all."""
    if not isinstance(layers, (list, tuple)) or (layers and all(_is_pair(p) for p in layers)):
        return [layers] * n_models
    if not layers:
        raise ValueError("layers is empty: give an int k, Evenly(n) or a list of (augmenting_layer, anchor_layer) pairs.")
    if n_models == 1 and _is_pair(layers):
        raise ValueError(f"layers={layers!r} looks like one pair: write it as a list of pairs, [{tuple(layers)!r}].")
    if len(layers) != n_models:
        raise ValueError(f"layers has {len(layers)} entries but there are {n_models} augmenting models: give one spec "
                         "for all models, or one per model.")
    return list(layers)
