"""The composed model: a frozen anchor and frozen augmenting model(s) joined by bridges.

How a forward pass runs (the same for training, evaluation and each generation step)::

    input_ids ─┬─> augmenting model(s), no grad ──> H_A^i at the mapped layers     (read)
               │                                        │ bridge.keys_values
               └─> anchor ── layer j ──(+ bridge)──> layer j+1 … ──> logits       (_bridged)

The kit never edits the anchor's code or modules. While a composed call runs, PyTorch hooks sit
on the anchor: a pre-forward hook (:meth:`ComposedModel._prepare`) that calls :meth:`read` for
the new tokens, and a forward hook after each mapped anchor layer that adds the bridges' output.
The hooks are removed when the call returns, so the anchor used on its own is the plain anchor.

:meth:`ComposedModel.read` is the one extension point: *what each anchor token reads*. The
paper's rule (feed the same new tokens to every augmenting model, read positions ≤ t) is the
default; the cross-tokenizer composition and the encoder ablation override it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from . import saving
from .bridge import Bridge
from .config import SHARED_TOKENS, CALMConfig, register_variant
from .hooks import AttentionRecord, HookPoint, on_layer_output, scoped_hooks, states_after
from .layers import decoder_layers, summary
from .state import ComposedCache, GrowingKV, Reading, Sequences, SequenceState, causal_mask, check_inputs, check_length, positions_from_mask


@register_variant(SHARED_TOKENS)
class ComposedModel(nn.Module):
    """An anchor LM augmented by one or more frozen augmenting LMs through trainable bridges.

    Keeps the anchor's API: ``model(input_ids, attention_mask=…, labels=…)`` returns the
    anchor's output (``.logits`` (B, T, V), ``.loss``); ``model.generate(…)`` is the anchor's
    Hugging Face ``generate`` with every new token also fed to the augmenting models;
    ``save_pretrained`` / ``from_pretrained`` store the bridges only. Build it with :func:`compose`;
    its settings are ``model.calm_config``.
    """

    shares_tokens = True  # the augmenting models read the anchor's token ids (a variant may not)

    def __init__(self, anchor: PreTrainedModel, augmenting: Sequence[PreTrainedModel], config: CALMConfig):
        super().__init__()
        self.calm_config, self.anchor, self.augmenting = config, anchor, nn.ModuleList(augmenting)
        self.anchor_layers = decoder_layers(anchor, config.layers_paths["anchor"])
        self.augmenting_layers = [decoder_layers(m, p) for m, p in zip(augmenting, config.layers_paths["augmenting"])]
        self.specs = config.bridge_specs()
        self.bridges = nn.ModuleList(
            Bridge(config.augmenting[s.augmenting].hidden_size, config.anchor.hidden_size, config.num_heads,
                   config.recency_bias, config.normalize_inputs)
            for s in self.specs
        ).to(device=next(anchor.parameters()).device, dtype=config.dtype)
        self._bridges_into = {j: [b for b, s in enumerate(self.specs) if s.anchor_layer == j]
                              for j in sorted({s.anchor_layer for s in self.specs})}  # anchor layer -> its bridges
        self.hook_reading = HookPoint()  # what each call's anchor tokens read (a Reading)
        readers = {"anchor": config.anchor, **{f"augmenting model {a}": m for a, m in enumerate(config.augmenting)}}
        self._readers = readers if self.shares_tokens else {"anchor": config.anchor}  # who reads input_ids
        self._base_flags = {id(p): p.requires_grad for m in (anchor, *augmenting) for p in m.parameters()}
        for base in (anchor, *augmenting):
            base.requires_grad_(False).eval()
        self._sequences = Sequences()  # the state of each cached sequence, by its anchor cache
        self._reading: Reading | None = None  # of the anchor call in progress
        self._checkpointing = False

    # ------------------------------------------------------------------ calling it
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, position_ids: torch.LongTensor | None = None,
                cache=None, use_cache: bool = False, **kwargs):
        """Run the composed model.

        Args:
            input_ids: (B, T) token ids, read by the anchor and every augmenting model.
            attention_mask: (B, past+T), 1 for real tokens, 0 for padding (left or right).
            labels: (B, T) for the next-token loss; -100 is ignored.
            cache: the anchor cache of an earlier cached call (``out.cache``) to continue that
                sequence; the augmenting models' caches and the bridges' keys/values follow it.
        Returns:
            the anchor's ``CausalLMOutputWithPast`` (logits (B, T, V), loss, cache).
        """
        past = cache.get_seq_length() if cache is not None else 0
        check_inputs(input_ids, attention_mask, past, self._readers)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, past, input_ids.shape[1], input_ids.device)
        with self._attached():
            return self.anchor(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               labels=labels, cache=cache, use_cache=use_cache or cache is not None, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """Hugging Face ``generate`` of the anchor, composed: greedy, sampling, beam search,
        ``num_return_sequences``, stop strings, streamers and the logits processors work; with
        ``use_cache`` (the default) every new token is fed to the anchor, each augmenting model
        and each bridge, all cached, and beam search reorders all of them. Left-pad batches.

        Returns: (B · num_return_sequences, T + new) ids, as the anchor's ``generate``.
        """
        check_inputs(input_ids, attention_mask, 0, self._readers)
        config = self.anchor.generation_config
        if kwargs.get("use_cache", config.use_cache) and not kwargs.get("cache_implementation", config.cache_implementation):
            cache = kwargs.setdefault("cache", self.new_cache())
            if not isinstance(cache, ComposedCache) and (kwargs.get("num_beams") or config.num_beams or 1) > 1:
                raise ValueError("Beam search reorders the cache at every step; a plain cache would not reorder the "
                                 "augmenting side with it. Pass no cache (or one from model.new_cache()).")
        with self._attached():
            return self.anchor.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def new_cache(self) -> ComposedCache:
        """An empty anchor cache for a new composed sequence (``model(ids, cache=…)``)."""
        return ComposedCache(self._sequences, config=self.anchor.config)

    # ------------------------------------------------------------------ what the anchor reads
    def read(self, sequence: SequenceState, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
             position_ids: torch.LongTensor) -> Reading:
        """The extension point: what the new anchor tokens of this call read. The paper's rule:
        every augmenting model reads the same new tokens (its cache holds the earlier ones), and
        anchor token t reads augmenting positions s ≤ t that are real tokens.

        Args:
            sequence: this sequence's state; ``sequence.length`` tokens came before.
            input_ids, position_ids: (B, T) the new tokens; attention_mask (B, past+T) or None.
        Returns: a :class:`Reading`; the new keys/values are appended to ``sequence``.
        """
        past, new = sequence.length, input_ids.shape[1]
        states = [self.augmenting_states(a, input_ids, attention_mask, position_ids, sequence.augmenting_caches[a])
                  for a in range(len(self.augmenting))]
        new_kv = [bridge.keys_values(states[spec.augmenting][spec.augmenting_layer])  # (B, H, T, d) each
                  for spec, bridge in zip(self.specs, self.bridges)]
        if not sequence.keys:  # a new sequence
            sequence.keys, sequence.values = [GrowingKV(k) for k, _ in new_kv], [GrowingKV(v) for _, v in new_kv]
        else:
            for b, (keys, values) in enumerate(new_kv):
                sequence.keys[b].append(keys)
                sequence.values[b].append(values)
        distance = None
        if self.calm_config.recency_bias:
            device = input_ids.device
            distance = torch.arange(past, past + new, device=device)[:, None] - torch.arange(past + new, device=device)
        return Reading([k.filled for k in sequence.keys], [v.filled for v in sequence.values],
                       causal_mask(attention_mask, past, new, input_ids.device), distance, past)

    def augmenting_states(self, a: int, input_ids, attention_mask, position_ids, cache) -> dict[int, torch.Tensor]:
        """Run augmenting model ``a`` (its backbone, no LM head, no grad) on the new tokens; return
        the hidden states (B, T, D_A) leaving each of its mapped layers (-1: the embeddings)."""
        wanted = {s.augmenting_layer for s in self.specs if s.augmenting == a}
        return states_after(self.augmenting[a].base_model, self.augmenting_layers[a], wanted, input_ids=input_ids,
                            attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                            use_cache=cache is not None)

    # ------------------------------------------------------------------ the hooks of one call
    @contextlib.contextmanager
    def _attached(self) -> Iterator[None]:
        """Hooks on the anchor for the duration of one composed call, always removed."""
        handles = [self.anchor.register_forward_pre_hook(self._prepare, with_kwargs=True)]
        for j in self._bridges_into:
            handles.append(on_layer_output(self.anchor_layers, j, functools.partial(self._bridged, j)))
        recompute = self._checkpointing and self.training and torch.is_grad_enabled()
        try:
            with recomputed(list(self.anchor_layers)[self.lowest_bridged_layer + 1:] if recompute else []):
                yield
        finally:
            for handle in handles:
                handle.remove()
            self._reading = None

    def _prepare(self, anchor: nn.Module, args: tuple, kwargs: dict):
        """Pre-forward hook of the anchor: read the augmenting side for this call's new tokens."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError("The composed model needs input_ids (inputs_embeds alone cannot feed the augmenting models).")
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ValueError("The composed model takes a 2D attention_mask (B, S); static/compiled caches are not supported.")
        cache = kwargs.get("cache")
        if cache is None and kwargs.get("use_cache", anchor.config.use_cache):
            cache = kwargs["cache"] = self.new_cache()
        past, new = (cache.get_seq_length() if cache is not None else 0), input_ids.shape[1]
        check_length(past + new, self._readers)
        sequence = self._sequences.for_call(cache, past, self.augmenting)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = positions_from_mask(mask, past, new, input_ids.device)
        self._reading = self.hook_reading(self.read(sequence, input_ids, mask, positions))
        sequence.length = past + new
        return args, kwargs

    def _bridged(self, j: int, hidden: torch.Tensor) -> torch.Tensor:
        """H_B^j + the outputs of the bridges into anchor layer ``j``; hidden is (B, T, D_B)."""
        r, delta = self._reading, None
        for b in self._bridges_into[j]:
            out = self.bridges[b](hidden, r.keys[b], r.values[b], r.mask, r.distance)  # (B, T, D_B)
            delta = out if delta is None else delta + out
        return hidden + delta

    # ------------------------------------------------------------------ observing it
    def hook_points(self) -> dict[str, HookPoint]:
        """Every named hook point: ``hook_reading`` and each bridge's (see :mod:`calm_mini.core.hooks`)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    def hooks(self, hooks: dict[str, Callable]):
        """A context manager: forward hooks (hook point name → ``hook(module, args, output)``,
        which may return a replacement) registered for the block only."""
        return scoped_hooks(self.hook_points(), hooks)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionRecord]:
        """Record every bridge's attention weights during the composed calls inside the block
        (outputs equal up to float rounding: an explicit softmax replaces the fused kernel).
        ``record[0]`` is (B, H, anchor_len, augmenting_len) for bridge 0."""
        record = AttentionRecord()
        with self.hooks(record.hooks(len(self.bridges))):
            yield record

    # ------------------------------------------------------------------ as a module
    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def lowest_bridged_layer(self) -> int:
        """The lowest anchor layer a bridge is added after (``-1``: the embeddings)."""
        return min(s.anchor_layer for s in self.specs)

    def bridge_parameters(self) -> Iterator[nn.Parameter]:
        """The only trainable parameters: those of the bridges."""
        return self.bridges.parameters()

    def num_bridge_parameters(self) -> int:
        return sum(p.numel() for p in self.bridges.parameters())

    def train(self, mode: bool = True) -> "ComposedModel":
        """Set the bridges' mode; the frozen base models always stay in eval mode."""
        super().train(mode)
        self.anchor.eval()
        self.augmenting.eval()
        return self

    def gradient_checkpointing_enable(self, enable: bool = True) -> None:
        """While training, recompute the anchor layers above the lowest bridge in the backward
        pass instead of storing their activations (the bridges are not recomputed). The anchor's
        own option would do nothing: the frozen anchor stays in eval mode."""
        self._checkpointing = enable

    def gradient_checkpointing_disable(self) -> None:
        self._checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._checkpointing

    def compile_bridges(self, **compile_kwargs) -> None:
        """``torch.compile`` each bridge in place (the base models run under Python hooks)."""
        for bridge in self.bridges:
            bridge.compile(**compile_kwargs)

    def summary(self) -> str:
        """The layer map of each augmenting model, with dimensions and parameter counts."""
        c = self.calm_config
        return "\n\n".join(summary(m, shape, c.anchor, c.num_heads, c.recency_bias)
                           for m, shape in zip(c.layer_maps, c.augmenting))

    def detach(self) -> tuple[PreTrainedModel, list[PreTrainedModel]]:
        """Hand the base models back as they came (trainability flags restored, no hooks):
        ``(anchor, [augmenting, …])``. The composed model must not be used afterwards."""
        for m in (self.anchor, *self.augmenting):
            for p in m.parameters():
                p.requires_grad_(self._base_flags.get(id(p), p.requires_grad))
        return self.anchor, list(self.augmenting)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``bridges.safetensors`` and ``calm_config.json`` to ``folder`` (nothing else), atomically."""
        saving.save(folder, self.calm_config, self.bridges.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, anchor: PreTrainedModel,
                        augmenting: PreTrainedModel | Sequence[PreTrainedModel], **variant_options) -> "ComposedModel":
        """Rebuild a composition saved by :meth:`save_pretrained` on the given base models, as
        the variant it was saved from (``variant_options``: e.g. its tokenizers).

        Raises:
            FileNotFoundError: the folder lacks ``calm_config.json`` or ``bridges.safetensors``.
            ValueError: the base models do not fit the saved bridges, or the files are corrupt.
        """
        return saving.load_composition(cls, folder, anchor, augmenting, **variant_options)


@contextlib.contextmanager
def recomputed(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Gradient checkpointing of ``layers`` for the block: each recomputes its forward in the
    backward pass. Hooks on a layer (the bridges') stay outside the recomputed region."""
    for layer in layers:
        layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
