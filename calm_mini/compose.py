"""The composed model: a frozen anchor and frozen augmenting model(s) joined by bridges.

How a forward pass runs (the same for training, evaluation and each generation step)::

    input_ids ─┬─> augmenting model(s), no grad ──> H_A^i at the mapped layers
               │                                        │ bridge.keys_values (cached while generating)
               └─> anchor ── layer j ──(+ bridge)──> layer j+1 … ──> logits

The kit never edits the anchor's code or modules. While a composed call runs, it puts PyTorch
hooks on the anchor: a pre-forward hook that feeds the *same new tokens* to each augmenting
model (with its own KV cache), and a forward hook on each mapped anchor layer that adds the
bridge's output. The hooks are removed when the call returns, so the anchor used on its own
is always the plain anchor.

Named hook points, for readers who want to follow the data: ``ComposedModel._prepare`` (start
of every anchor call), ``ComposedModel._add_bridges`` (after each mapped anchor layer).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from .bridge import Bridge
from .files import atomic_write
from .layers import EMBEDDINGS, LayerMap, LayerSpec, ModelShape, decoder_layers, resolve_layer_map, summary

CONFIG_NAME = "calm_config.json"
WEIGHTS_NAME = "bridges.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class BridgeSpec:
    """Where one bridge sits: augmenting model ``augmenting`` (index), its layer, the anchor layer."""

    augmenting: int
    augmenting_layer: int
    anchor_layer: int


@dataclass
class _StepState:
    """What one composed anchor call needs in its layer hooks, and what generation keeps.

    keys/values: per bridge, (B, H, S, d) for every augmenting position seen so far.
    mask: (B, T, S) bool, which augmenting positions each new anchor position may read.
    distance: (T, S), anchor position minus augmenting position (for the recency bias).
    """

    augmenting_caches: list
    keys: list
    values: list
    length: int = 0
    mask: torch.Tensor | None = None
    distance: torch.Tensor | None = None


class AttentionRecord:
    """Attention weights captured per bridge, across the anchor calls of one forward or generate.

    ``record[b]`` is (B, H, anchor_len, augmenting_len) for bridge ``b``: during cached generation
    each step adds one anchor row that reads a longer augmenting prefix; the rows are stacked
    and the positions a row could not read yet are exact zeros. A call that starts a new
    sequence (no cache) starts the record afresh, so it always covers the latest sequence.
    """

    def __init__(self):
        self.chunks: dict[int, list[torch.Tensor]] = {}

    def add(self, bridge: int, weights: torch.Tensor) -> None:
        self.chunks.setdefault(bridge, []).append(weights.detach())

    def __getitem__(self, bridge: int) -> torch.Tensor:
        if bridge not in self.chunks:
            raise KeyError(f"No attention recorded for bridge {bridge}; recorded bridges: {self.bridges()}.")
        chunks = self.chunks[bridge]
        width = chunks[-1].shape[-1]
        return torch.cat([F.pad(c, (0, width - c.shape[-1])) for c in chunks], dim=2)

    def __len__(self) -> int:
        return len(self.chunks)

    def bridges(self) -> list[int]:
        return sorted(self.chunks)


def _check_causal_lm(model: nn.Module, role: str) -> None:
    if not isinstance(model, PreTrainedModel) or not model.can_generate():
        raise TypeError(
            f"The {role} model must be a Hugging Face decoder-only causal LM (AutoModelForCausalLM); "
            f"got {type(model).__name__}."
        )
    if getattr(model.config, "is_encoder_decoder", False):
        raise TypeError(f"The {role} model {type(model).__name__} is an encoder-decoder; CALM composes decoder-only LMs.")


def positions_from_mask(attention_mask: torch.Tensor | None, past: int, new: int, device) -> torch.LongTensor:
    """Position ids of the ``new`` last tokens, counting only real (unpadded) tokens.

    This is what Hugging Face ``generate`` does; a plain forward would number left padding
    too, and then a left-padded row would not match the same row unpadded.

    Returns: (B, new), or (1, new) without a mask.
    """
    if attention_mask is None:
        return torch.arange(past, past + new, device=device).unsqueeze(0)
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)[:, -new:]


class ComposedModel(nn.Module):
    """An anchor LM augmented by one or more frozen augmenting LMs through trainable bridges.

    Keeps the anchor's API: ``model(input_ids, attention_mask=…, labels=…)`` returns the
    anchor's output (``.logits`` (B, T, V), ``.loss``); ``model.generate(…)`` is the anchor's
    Hugging Face ``generate`` with every new token also fed to the augmenting models;
    ``save_pretrained`` / ``from_pretrained`` store the bridges only.

    Build it with :func:`compose`.
    """

    def __init__(
        self,
        anchor: PreTrainedModel,
        augmenting: Sequence[PreTrainedModel],
        layer_maps: Sequence[LayerMap],
        num_heads: int | None = None,
        anchor_layers_path: str | None = None,
        augmenting_layers_paths: Sequence[str | None] | None = None,
        recency_bias: bool = False,
        bridge_dtype: torch.dtype = torch.float32,
        normalize_inputs: bool = False,
    ):
        super().__init__()
        augmenting_layers_paths = list(augmenting_layers_paths or [None] * len(augmenting))
        self.anchor = anchor
        self.augmenting = nn.ModuleList(augmenting)
        self.anchor_shape = ModelShape.of(anchor, anchor_layers_path)
        self.augmenting_shapes = [ModelShape.of(m, p) for m, p in zip(augmenting, augmenting_layers_paths)]
        self.layer_maps = list(layer_maps)
        self.num_heads = num_heads or self.anchor_shape.num_heads
        self.recency_bias = recency_bias
        self.normalize_inputs = normalize_inputs
        self.specs = [
            BridgeSpec(a, i, j) for a, layer_map in enumerate(self.layer_maps) for i, j in layer_map.pairs
        ]
        self.bridges = nn.ModuleList(
            Bridge(
                self.augmenting_shapes[s.augmenting].hidden_size, self.anchor_shape.hidden_size, self.num_heads,
                recency_bias, normalize_inputs,
            )
            for s in self.specs
        ).to(device=next(anchor.parameters()).device, dtype=bridge_dtype)
        self._anchor_layers = decoder_layers(anchor, anchor_layers_path)
        self._augmenting_layers = [decoder_layers(m, p) for m, p in zip(augmenting, augmenting_layers_paths)]
        self._layers_paths = {"anchor": anchor_layers_path, "augmenting": augmenting_layers_paths}
        self._base_flags = {id(p): p.requires_grad for m in (anchor, *augmenting) for p in m.parameters()}
        for base in (anchor, *augmenting):
            base.requires_grad_(False)
            base.eval()
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._step: _StepState | None = None
        self._record: AttentionRecord | None = None
        self._encoder: tuple[torch.Tensor, torch.Tensor] | None = None
        self._checkpointing = False

    # ------------------------------------------------------------------ public API
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool = False,
        encoder_ids: torch.LongTensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """Run the composed model.

        Args:
            input_ids: (B, T) token ids, read by the anchor and every augmenting model.
            attention_mask: (B, past+T), 1 for real tokens, 0 for padding (left or right).
            labels: (B, T) for the next-token loss; -100 is ignored.
            cache: the anchor cache returned by an earlier cached call (``out.cache``) to
                continue that sequence; the augmenting models' caches and the bridges'
                keys/values follow it.
            encoder_ids, encoder_mask: (B, S) — only for the paper's *encoder* ablation: the
                augmenting models read these tokens (the prompt) once, instead of the same
                tokens as the anchor, and every anchor position may read all of them.
        Returns:
            the anchor's ``CausalLMOutputWithPast`` (logits (B, T, V), loss, cache).
        """
        past = cache.get_seq_length() if cache is not None else 0
        self._check_ids_and_mask(input_ids, attention_mask, past)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, past, input_ids.shape[1], input_ids.device)
        with self._attached(encoder_ids, encoder_mask):
            return self.anchor(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                labels=labels,
                cache=cache,
                use_cache=use_cache or cache is not None,
                **kwargs,
            )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        encoder_ids: torch.LongTensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """Hugging Face ``generate`` of the anchor, composed. Greedy, sampling and all logits
        processors work; with ``use_cache`` (the default) the anchor, each augmenting model and
        each bridge keep caches, and every new token is fed to all of them.

        Args:
            input_ids: (B, T) prompt ids; left-pad batches and pass ``attention_mask``.
            encoder_ids, encoder_mask: the encoder ablation, as in :meth:`forward`.
        Returns:
            (B, T + new) ids, as the anchor's ``generate``.
        """
        self._check_ids_and_mask(input_ids, attention_mask, 0)
        num_beams = kwargs.get("num_beams", self.anchor.generation_config.num_beams) or 1
        if num_beams > 1:
            raise NotImplementedError(
                "Beam search is not supported by the composed model (the augmenting caches would have to be "
                "reordered with the beams); use greedy decoding or sampling (num_beams=1)."
            )
        with self._attached(encoder_ids, encoder_mask):
            return self.anchor.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator["AttentionRecord"]:
        """Record every bridge's attention weights during the composed calls inside the block.

        Off by default; outputs are the same with it on (an explicit softmax replaces the fused
        kernel, equal up to float rounding). Example::

            with model.capture_attention() as record:
                model(ids)
            record[0]  # (B, H, anchor_len, augmenting_len) for bridge 0
        """
        self._record = AttentionRecord()
        try:
            yield self._record
        finally:
            self._record = None

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def bridge_parameters(self) -> Iterator[nn.Parameter]:
        """The only trainable parameters: those of the bridges."""
        return self.bridges.parameters()

    @property
    def lowest_bridged_layer(self) -> int:
        """The lowest anchor layer a bridge is added after (``-1``: the embeddings)."""
        return min(s.anchor_layer for s in self.specs)

    def num_bridge_parameters(self) -> int:
        return sum(p.numel() for p in self.bridges.parameters())

    def gradient_checkpointing_enable(self) -> None:
        """While training, recompute the anchor's layers in the backward pass instead of storing
        their activations (memory for time, as Hugging Face's option of the same name).

        Only the anchor layers above the lowest bridge are checkpointed: below it nothing needs
        a gradient. The bridges themselves are not recomputed (their activations are small).
        Hugging Face's own ``anchor.gradient_checkpointing_enable()`` would do nothing here,
        because the frozen anchor stays in eval mode.
        """
        self._checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self._checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._checkpointing

    def compile_bridges(self, **compile_kwargs) -> None:
        """``torch.compile`` each bridge in place (keyword arguments go to ``torch.compile``).

        Only the bridges are compiled: the base models run under Python hooks, which compile
        would split anyway. Compile the base models yourself (``anchor.compile()``) if you want.
        """
        for bridge in self.bridges:
            bridge.compile(**compile_kwargs)

    def train(self, mode: bool = True) -> "ComposedModel":
        """Set the bridges' mode; the frozen base models always stay in eval mode."""
        super().train(mode)
        self.anchor.eval()
        self.augmenting.eval()
        return self

    def summary(self) -> str:
        """The layer map of each augmenting model, with dimensions and parameter counts."""
        return "\n\n".join(
            summary(layer_map, shape, self.anchor_shape, self.num_heads, self.recency_bias)
            for layer_map, shape in zip(self.layer_maps, self.augmenting_shapes)
        )

    def detach(self) -> tuple[PreTrainedModel, list[PreTrainedModel]]:
        """Hand the base models back as they came: trainability flags restored, no hooks.

        Returns:
            (anchor, [augmenting, …]). The composed model must not be used afterwards.
        """
        for m in (self.anchor, *self.augmenting):
            for p in m.parameters():
                p.requires_grad_(self._base_flags.get(id(p), p.requires_grad))
        return self.anchor, list(self.augmenting)

    # ------------------------------------------------------------------ save / load
    def composition_config(self) -> dict:
        """What ``save_pretrained`` writes as JSON: the bridges and the identities of the models."""

        def identity(model, shape):
            return {"name_or_path": model.config.name_or_path, **asdict(shape)}

        return {
            "format": "calm_mini",
            "version": FORMAT_VERSION,
            "num_heads": self.num_heads,
            "recency_bias": self.recency_bias,
            "normalize_inputs": self.normalize_inputs,
            "layer_maps": [{"augmenting": list(m.augmenting), "anchor": list(m.anchor)} for m in self.layer_maps],
            "layers_paths": self._layers_paths,
            "anchor": identity(self.anchor, self.anchor_shape),
            "augmenting": [identity(m, s) for m, s in zip(self.augmenting, self.augmenting_shapes)],
        }

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``bridges.safetensors`` and ``calm_config.json`` to ``folder`` (nothing else).

        Each file is written to a temporary name and renamed into place, so an interrupted
        save never leaves a half-written file; the config is written last.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.bridges.state_dict().items()}
        atomic_write(folder / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
        text = json.dumps(self.composition_config(), indent=2)
        atomic_write(folder / CONFIG_NAME, lambda path: Path(path).write_text(text))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        anchor: PreTrainedModel,
        augmenting: PreTrainedModel | Sequence[PreTrainedModel],
    ) -> "ComposedModel":
        """Rebuild a composition saved by :meth:`save_pretrained` on the given base models.

        Raises:
            FileNotFoundError: the folder lacks ``calm_config.json`` or ``bridges.safetensors``.
            ValueError: the base models do not fit the saved bridges (architecture, depth,
                width or vocabulary differ), or the files are corrupt.
        """
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} has no {name}; save bridges with ComposedModel.save_pretrained.")
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{folder / CONFIG_NAME} is not valid JSON ({err}); the save is corrupt.") from err
        if config.get("format") != "calm_mini" or config.get("version") != FORMAT_VERSION:
            raise ValueError(f"{folder / CONFIG_NAME} is not a calm_mini v{FORMAT_VERSION} bridge config.")
        if "tokenizers" in config and cls is ComposedModel:
            raise ValueError(
                f"{folder} holds bridges between models that tokenize differently; load them with "
                "calm_mini.crosstok.CrossTokenizerModel.from_pretrained(folder, anchor, augmenting, "
                "anchor_tokenizer=..., augmenting_tokenizer=...)."
            )
        augmenting = _as_list(augmenting)
        paths = config["layers_paths"]
        _check_identity("anchor", config["anchor"], ModelShape.of(anchor, paths["anchor"]))
        if len(augmenting) != len(config["augmenting"]):
            raise ValueError(
                f"The saved bridges join {len(config['augmenting'])} augmenting model(s); {len(augmenting)} given."
            )
        for a, (model, saved) in enumerate(zip(augmenting, config["augmenting"])):
            _check_identity(f"augmenting model {a}", saved, ModelShape.of(model, paths["augmenting"][a]))
        layer_maps = [LayerMap(tuple(m["augmenting"]), tuple(m["anchor"])) for m in config["layer_maps"]]
        model = cls(
            anchor, augmenting, layer_maps, config["num_heads"], paths["anchor"], paths["augmenting"],
            config["recency_bias"], normalize_inputs=config.get("normalize_inputs", False),
        )
        try:
            state = load_file(folder / WEIGHTS_NAME)
        except (SafetensorError, OSError) as err:
            raise ValueError(f"Cannot read {folder / WEIGHTS_NAME}: {err}. The save is corrupt; save it again.") from err
        missing, unexpected = set(model.bridges.state_dict()) - set(state), set(state) - set(model.bridges.state_dict())
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_NAME} does not match its config: missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]}.")
        model.bridges.load_state_dict(state)
        return model

    # ------------------------------------------------------------------ hooks
    @contextlib.contextmanager
    def _attached(self, encoder_ids=None, encoder_mask=None):
        """Hooks on the anchor for the duration of one composed call, always removed."""
        if encoder_ids is not None:
            self._check_ids_and_mask(encoder_ids, encoder_mask, 0)
        handles = [self.anchor.register_forward_pre_hook(self._prepare, with_kwargs=True)]
        for j in sorted({s.anchor_layer for s in self.specs}):
            if j == EMBEDDINGS:
                handles.append(self._anchor_layers[0].register_forward_pre_hook(self._add_bridges(j), with_kwargs=True))
            else:
                handles.append(self._anchor_layers[j].register_forward_hook(self._add_bridges(j)))
        checkpointed = []
        if self._checkpointing and self.training and torch.is_grad_enabled():
            checkpointed = list(self._anchor_layers)[self.lowest_bridged_layer + 1 :]
        for layer in checkpointed:  # the bridge hooks stay outside the recomputed region
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
        try:
            if encoder_ids is not None:
                mask = encoder_mask if encoder_mask is not None else torch.ones_like(encoder_ids)
                self._encoder = (encoder_ids, mask)
            yield
        finally:
            for handle in handles:
                handle.remove()
            for layer in checkpointed:
                del layer.forward
            self._step = None
            self._encoder = None

    def _prepare(self, anchor: nn.Module, args: tuple, kwargs: dict):
        """Pre-forward hook of the anchor: run the augmenting models on the same new tokens
        and set each bridge's keys, values and mask for this call."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError("The composed model needs input_ids (inputs_embeds alone cannot feed the augmenting models).")
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise ValueError("The composed model takes a 2D attention_mask (B, S); static/compiled caches are not supported.")
        cache_key = "cache" if "cache" in kwargs or "past_key_values" not in kwargs else "past_key_values"
        cache = kwargs.get(cache_key)
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = anchor.config.use_cache
        if cache is None and use_cache:
            cache = kwargs[cache_key] = DynamicCache(config=anchor.config)
        past = cache.get_seq_length() if cache is not None else 0
        new = input_ids.shape[1]
        self._check_length(past + new)
        state = self._state_for(cache, past)
        if self._record is not None and past == 0:
            self._record.chunks.clear()
        if self._encoder is None:
            positions = kwargs.get("position_ids")
            if positions is None:
                positions = positions_from_mask(mask, past, new, input_ids.device)
            self._extend_keys_values(state, input_ids, mask, positions)
            state.mask = self._bridge_mask(mask, past, new, input_ids.shape[0], input_ids.device)
            query = torch.arange(past, past + new, device=input_ids.device)
            state.distance = query[:, None] - torch.arange(past + new, device=input_ids.device)[None, :]  # (T, S)
        else:
            state.mask = self._encoder_mask(state, past, new, mask)
            state.distance = torch.zeros(state.mask.shape[1:], device=input_ids.device)
        state.length = past + new
        self._step = state
        return args, kwargs

    def _state_for(self, cache, past: int) -> _StepState:
        """A fresh state for a new sequence, or the one that follows ``cache``."""
        if past == 0:
            caches = [DynamicCache(config=m.config) if cache is not None else None for m in self.augmenting]
            state = _StepState(caches, [None] * len(self.bridges), [None] * len(self.bridges))
            if cache is not None:
                self._states[cache] = state
            return state
        state = self._states.get(cache)
        if state is None or state.length != past:
            raise RuntimeError(
                "This anchor cache was not made by this composed model's last call on it (the augmenting caches "
                "do not follow it). Start the sequence again without a cache."
            )
        return state

    def _extend_keys_values(self, state: _StepState, input_ids, mask, positions) -> None:
        """Feed the new tokens to every augmenting model and append each bridge's keys/values."""
        hidden = [
            self._augmenting_states(a, input_ids, mask, positions, state.augmenting_caches[a])
            for a in range(len(self.augmenting))
        ]
        for b, (spec, bridge) in enumerate(zip(self.specs, self.bridges)):
            k, v = bridge.keys_values(hidden[spec.augmenting][spec.augmenting_layer])
            if state.length:
                k, v = torch.cat([state.keys[b], k], dim=2), torch.cat([state.values[b], v], dim=2)
            state.keys[b], state.values[b] = k, v

    def _encoder_mask(self, state: _StepState, past: int, new: int, mask) -> torch.Tensor:
        """The encoder ablation: the augmenting models read only the given prompt, once, and
        every anchor position may read all of it. Returns the (B, new, S_prompt) bridge mask."""
        ids, prompt_mask = self._encoder
        if past == 0:
            positions = positions_from_mask(prompt_mask, 0, ids.shape[1], ids.device)
            state.augmenting_caches = [None] * len(self.augmenting)
            self._extend_keys_values(state, ids, prompt_mask, positions)
        readable = prompt_mask.bool()[:, None, :].expand(ids.shape[0], new, ids.shape[1])
        if mask is not None:
            readable = readable & mask.bool()[:, -new:, None]
        return readable

    @torch.no_grad()
    def _augmenting_states(self, a: int, input_ids, mask, positions, cache) -> dict[int, torch.Tensor]:
        """Hidden states (B, T, D_A) leaving each mapped layer of augmenting model ``a``."""
        wanted = {s.augmenting_layer for s in self.specs if s.augmenting == a}
        captured: dict[int, torch.Tensor] = {}

        def capture(i):
            def after(module, args, output):
                captured[i] = output[0] if isinstance(output, tuple) else output

            def before(module, args, kwargs):
                captured[i] = args[0] if args else kwargs["hidden_states"]

            return before if i == EMBEDDINGS else after

        layers = self._augmenting_layers[a]
        handles = [
            layers[0].register_forward_pre_hook(capture(i), with_kwargs=True)
            if i == EMBEDDINGS
            else layers[i].register_forward_hook(capture(i))
            for i in wanted
        ]
        try:
            self.augmenting[a].base_model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=cache is not None,
            )
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _bridge_mask(self, mask, past: int, new: int, batch: int, device) -> torch.Tensor:
        """(B, new, past+new) bool: anchor position t reads augmenting position s iff s ≤ t
        and both are real tokens."""
        query = torch.arange(past, past + new, device=device)
        key = torch.arange(past + new, device=device)
        allowed = (key[None, :] <= query[:, None]).expand(batch, new, past + new)
        if mask is not None:
            real = mask.bool()
            allowed = allowed & real[:, None, :] & real[:, -new:, None]
        return allowed

    def _bridged(self, j: int, hidden: torch.Tensor) -> torch.Tensor:
        """H_B^j + the outputs of the bridges into anchor layer ``j``; hidden is (B, T, D_B)."""
        step, delta = self._step, 0
        for b, (spec, bridge) in enumerate(zip(self.specs, self.bridges)):
            if spec.anchor_layer == j:
                out, weights = bridge(
                    hidden, step.keys[b], step.values[b], step.mask, step.distance, self._record is not None
                )
                delta = delta + out
                if weights is not None:
                    self._record.add(b, weights)
        return hidden + delta

    def _add_bridges(self, j: int):
        """Forward hook after anchor layer ``j`` (or, for j = -1, pre-hook of layer 0)."""

        def after(module, args, output):
            if isinstance(output, tuple):
                return (self._bridged(j, output[0]), *output[1:])
            return self._bridged(j, output)

        def before(module, args, kwargs):
            if args:
                return (self._bridged(j, args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self._bridged(j, kwargs["hidden_states"])}

        return before if j == EMBEDDINGS else after

    # ------------------------------------------------------------------ checks
    def _check_ids_and_mask(self, input_ids, attention_mask, past: int) -> None:
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be a (batch, length) tensor of token ids; got {_describe(input_ids)}.")
        if attention_mask is not None and tuple(attention_mask.shape) != (input_ids.shape[0], past + input_ids.shape[1]):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {tuple(input_ids.shape)} "
                f"(plus {past} cached tokens) need ({input_ids.shape[0]}, {past + input_ids.shape[1]})."
            )
        vocab, whose = self._input_vocabulary()
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
            raise ValueError(f"input_ids hold ids outside 0..{vocab - 1}, {whose}.")

    def _input_vocabulary(self) -> tuple[int, str]:
        """The bound on input ids, and whose vocabulary it is (for the error message)."""
        return min(s.vocab_size for s in (self.anchor_shape, *self.augmenting_shapes)), "the vocabulary both models share"

    def _check_length(self, length: int) -> None:
        for role, shape in (("anchor", self.anchor_shape), *(("augmenting", s) for s in self.augmenting_shapes)):
            if shape.max_positions is not None and length > shape.max_positions:
                raise ValueError(
                    f"The sequence has {length} tokens but the {role} model ({shape.model_type}) accepts at most "
                    f"{shape.max_positions}; shorten the input or max_new_tokens."
                )


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
        recency_bias: the kit's addition to the paper: a learned per-head bias on the distance
            between anchor and augmenting positions, so that a bridge can read the augmenting
            state of its own token (see :mod:`calm_mini.bridge`).
        bridge_dtype: the bridges' parameter dtype. float32 by default, also for bfloat16 base
            models: trainable weights and AdamW need the precision, and a bridge casts its
            inputs and output to and from the base models' dtype.
        normalize_inputs: RMS-normalise each bridge's inputs (anchor states before the query,
            augmenting states before the projection), so that attention scores do not grow with
            the large hidden states of real pretrained models, and multiply each bridge's output
            by the RMS of the anchor state it is added to; see :mod:`calm_mini.bridge`.
        anchor_tokenizer, augmenting_tokenizer: give both to compose models that tokenize
            differently (one augmenting model): the augmenting model reads the text of the
            anchor's tokens with its own tokenizer, causally in text (see :mod:`calm_mini.crosstok`).
        check_text: with tokenizers, require each to give back a probe text unchanged (no
            lower-casing, stripped accents or changed spaces).
    Returns:
        A :class:`ComposedModel` equal to the anchor until its bridges are trained
        (a :class:`calm_mini.crosstok.CrossTokenizerModel` when tokenizers are given).
    """
    augmenting = _as_list(augmenting)
    cross_tokenizer = anchor_tokenizer is not None or augmenting_tokenizer is not None
    _check_causal_lm(anchor, "anchor")
    for m in augmenting:
        _check_causal_lm(m, "augmenting")
        if m is anchor:
            raise ValueError("The anchor and the augmenting model must be different model objects.")
        if check_vocab and not cross_tokenizer and m.config.get_text_config().vocab_size != anchor.config.get_text_config().vocab_size:
            raise ValueError(
                f"The anchor's vocabulary ({anchor.config.get_text_config().vocab_size}) differs from the augmenting "
                f"model's ({m.config.get_text_config().vocab_size}): both read the same token ids, so they need the "
                "same tokenizer. If only the embedding padding differs, pass check_vocab=False."
            )
    paths = (
        list(augmenting_layers_path)
        if isinstance(augmenting_layers_path, (list, tuple))
        else [augmenting_layers_path] * len(augmenting)
    )
    specs = _per_model_specs(layers, len(augmenting))
    anchor_shape = ModelShape.of(anchor, anchor_layers_path)
    layer_maps = [resolve_layer_map(spec, ModelShape.of(m, p), anchor_shape) for spec, m, p in zip(specs, augmenting, paths)]
    if cross_tokenizer:
        from .crosstok import CrossTokenizerModel  # imported here: crosstok builds on this module

        return CrossTokenizerModel(
            anchor, augmenting, layer_maps, num_heads, anchor_layers_path, paths, recency_bias, bridge_dtype,
            normalize_inputs=normalize_inputs, anchor_tokenizer=anchor_tokenizer,
            augmenting_tokenizer=augmenting_tokenizer, check_text=check_text,
        )
    return ComposedModel(
        anchor, augmenting, layer_maps, num_heads, anchor_layers_path, paths, recency_bias, bridge_dtype,
        normalize_inputs=normalize_inputs,
    )


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
        raise ValueError(
            f"layers has {len(layers)} entries but there are {n_models} augmenting models: give one spec for all "
            "models, or one per model."
        )
    return list(layers)


def _as_list(augmenting) -> list:
    return list(augmenting) if isinstance(augmenting, (list, tuple, nn.ModuleList)) else [augmenting]


def _check_identity(role: str, saved: dict, shape: ModelShape) -> None:
    fields = ("model_type", "num_layers", "hidden_size", "vocab_size")
    diffs = [f"{f}: saved {saved.get(f)!r}, given {getattr(shape, f)!r}" for f in fields if saved.get(f) != getattr(shape, f)]
    if diffs:
        raise ValueError(
            f"The {role} does not fit the saved bridges (saved for {saved.get('name_or_path') or 'an unnamed model'}): "
            + "; ".join(diffs)
        )


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
