"""Feature caching: below the lowest bridge the frozen anchor sees the same inputs at every
training step, so its states entering that layer can be computed once (:func:`anchor_features`)
and each step runs only the anchor layers from there up (:class:`CachedAnswerWindow`) — the same
loss and gradients for less time.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from ..core import ComposedModel, positions_from_mask
from .targets import labelled_loss


@contextlib.contextmanager
def anchor_stack(anchor: PreTrainedModel, start: int = 0, stop: int | None = None,
                 inputs: torch.Tensor | None = None, head: bool = True) -> Iterator[None]:
    """For the duration of the block, the anchor's decoder runs only ``layers[start:stop]``;
    with ``inputs`` (B, T, D), those states replace its token embeddings (the ids still decide
    the mask, the positions and what the augmenting models read); with ``head=False`` its
    output layer is the identity, so ``.logits`` are the final-norm states (B, T, D).

    Rotary positions and the causal/padding mask are computed from ``position_ids`` and
    ``attention_mask`` before the first layer, so a stack that starts at layer ``start`` fed
    the states that entered it sees exactly what it sees in the full forward. Hooks on the kept
    layers (the bridges') stay in place, since the layer objects are the same. Llama-style
    anchors only (``anchor.model.layers``); everything is restored when the block ends.
    """
    body = getattr(anchor, "model", None)
    if not isinstance(getattr(body, "layers", None), nn.ModuleList) or not hasattr(body, "embed_tokens"):
        raise TypeError(f"Feature caching needs a Llama-style anchor (model.layers, model.embed_tokens); got "
                        f"{type(anchor).__name__}. Train without feature caching for other anchors.")
    layers = body.layers
    handle = None
    if inputs is not None:
        def embedded(module, args, output):
            if output.shape != inputs.shape:
                raise ValueError(f"Cached anchor states {tuple(inputs.shape)} do not fit the embeddings "
                                 f"{tuple(output.shape)}: trim them to the same rows and columns as the ids.")
            return inputs.to(output.dtype)

        handle = body.embed_tokens.register_forward_hook(embedded)
    lm_head = anchor.lm_head
    body.layers = nn.ModuleList(list(layers)[start:stop])
    if not head:
        anchor.lm_head = nn.Identity()
    try:
        yield
    finally:
        body.layers = layers
        anchor.lm_head = lm_head
        if handle is not None:
            handle.remove()


@torch.no_grad()
def anchor_features(anchor: PreTrainedModel, data: dict[str, torch.Tensor], layer: int,
                    batch_size: int = 32) -> torch.Tensor:
    """The anchor's hidden states entering decoder layer ``layer``, for every row of ``data``
    (left-padded ``input_ids``, ``attention_mask`` (N, T)), computed once: below the lowest
    bridge the frozen anchor sees the same inputs at every training step.

    Rows are run in batches of similar length (only the columns a batch uses); the states of
    padding columns are left at zero (no real position reads them).

    Returns: (N, T, D) in the anchor's dtype.
    """
    ids, mask = data["input_ids"], data["attention_mask"]
    lengths = mask.sum(-1)
    features = torch.zeros(*ids.shape, anchor.config.hidden_size, dtype=anchor.dtype)
    captured = {}
    handle = anchor.model.norm.register_forward_pre_hook(lambda module, args: captured.update(states=args[0]))
    try:
        with anchor_stack(anchor, 0, layer):
            for rows in torch.argsort(lengths).split(batch_size):
                width = int(lengths[rows].max())
                batch_mask = mask[rows, -width:]
                anchor.model(input_ids=ids[rows, -width:], attention_mask=batch_mask,
                             position_ids=positions_from_mask(batch_mask, 0, width, ids.device))
                features[rows, -width:] = captured["states"].to(features.dtype) * batch_mask[..., None]
    finally:
        handle.remove()
    return features


class CachedAnswerWindow(nn.Module):
    """:class:`AnswerWindow` made cheap, with the same loss and gradients: the anchor's layers
    below ``start`` (the lowest bridged layer) are replaced by their cached output (``features``
    from :func:`anchor_features`), so a step runs only the anchor layers from ``start`` up, the
    augmenting model and the bridges; and the output layer (49152 words wide) runs only at the
    positions that predict a label (:func:`labelled_loss`).
    """

    def __init__(self, model: ComposedModel):
        super().__init__()
        self.model = model
        self.start = max(0, model.lowest_bridged_layer)  # a bridge into the embeddings reads layer 0's input

    def forward(self, input_ids, attention_mask, labels, features, target_ids=None, target_probs=None
                ) -> CausalLMOutput:
        width = int(attention_mask.sum(-1).max())  # left padding: drop the columns no row uses
        labels = labels[:, -width:]  # (B, ≤ W): an answer window, or every column of the kept ones
        anchor = self.model.anchor
        with anchor_stack(anchor, self.start, inputs=features[:, -width:], head=False):
            hidden = self.model(input_ids[:, -width:], attention_mask=attention_mask[:, -width:],
                                logits_to_keep=labels.shape[1]).logits  # (B, W, D): states, not logits
        return labelled_loss(hidden, labels, anchor.lm_head, target_ids, target_probs)
