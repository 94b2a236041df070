"""Find the decoder layers of a Hugging Face causal LM and build the CALM layer map.

CALM joins layer ``i`` of the augmenting model m_A to layer ``j`` of the anchor m_B with a
bridge. Layer indices are **0-based layer outputs**: pair ``(3, 5)`` reads the hidden states
that leave augmenting layer 3 and adds the bridge's output to the hidden states that leave
anchor layer 5 (so they feed anchor layer 6). Index ``-1`` (``EMBEDDINGS``) names the token
embeddings, the input of layer 0: a bridge into anchor layer -1 edits what the anchor's first
layer reads (the kit's addition; the paper joins layer outputs only).

Three ways to choose the pairs (the paper's default is the first, with ``k = 4``):

* ``EveryK(k)`` (or a plain ``int``): augmenting layers ``k-1, 2k-1, …`` and as many evenly
  spaced anchor layers;
* ``Evenly(n)``: ``n`` evenly spaced layers on both sides;
* explicit pairs ``[(i_1, j_1), …, (i_n, j_n)]`` or ``LayerMap(augmenting=[…], anchor=[…])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Sequence, Union

from torch import nn

EMBEDDINGS = -1  # layer index of the embeddings' output, the input of decoder layer 0

# Where common architectures keep their decoder blocks, relative to the causal-LM wrapper.
KNOWN_LAYER_PATHS = (
    "model.layers",  # Llama, SmolLM2, Mistral, Qwen2, Gemma, Phi, …
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom, CodeGen
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "transformer.layers",  # ChatGLM-style
)


def _get_path(model: nn.Module, path: str):
    return reduce(getattr, path.split("."), model)


def decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """Return the ``nn.ModuleList`` of decoder blocks of a causal LM.

    Args:
        model: a Hugging Face ``…ForCausalLM``.
        path: dotted attribute path to the blocks (e.g. ``"model.layers"``) for architectures
            the kit does not know; by default the known paths are tried, then any
            ``ModuleList`` whose length is the config's number of layers.

    Raises:
        ValueError: when no list of decoder layers can be found, naming how to pass ``path``.
    """
    if path is not None:
        try:
            layers = _get_path(model, path)
        except AttributeError as err:
            raise ValueError(f"{type(model).__name__} has no attribute path {path!r}.") from err
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(f"{path!r} of {type(model).__name__} is a {type(layers).__name__}, not an nn.ModuleList.")
        return layers
    for known in KNOWN_LAYER_PATHS:
        try:
            layers = _get_path(model, known)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(
        f"Cannot find the decoder layers of {type(model).__name__}. Pass their attribute path, "
        f"e.g. compose(..., anchor_layers_path='model.layers') or augmenting_layers_path=..., "
        f"pointing at the nn.ModuleList of decoder blocks."
    )


@dataclass(frozen=True)
class ModelShape:
    """What the composition knows of one base model: depth, width, heads, vocabulary, context,
    architecture and (for a saved composition's record) its name."""

    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    max_positions: int | None
    model_type: str
    name_or_path: str = ""

    @classmethod
    def of(cls, model: nn.Module, layers_path: str | None = None) -> "ModelShape":
        config = model.config.get_text_config()
        return cls(
            num_layers=len(decoder_layers(model, layers_path)),
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            vocab_size=config.vocab_size,
            max_positions=getattr(config, "max_position_embeddings", None),
            model_type=config.model_type,
            name_or_path=getattr(model.config, "name_or_path", "") or "",
        )

    def fits(self, other: "ModelShape") -> list[str]:
        """What differs between two shapes in what the bridges depend on (empty: they fit)."""
        fields = ("model_type", "num_layers", "hidden_size", "vocab_size")
        return [f"{f}: saved {getattr(self, f)!r}, given {getattr(other, f)!r}" for f in fields
                if getattr(self, f) != getattr(other, f)]


@dataclass(frozen=True)
class LayerMap:
    """Ordered pairs of (augmenting layer, anchor layer), 0-based layer outputs.

    Rules, checked on construction and against the models by :meth:`check`:
    the two lists have equal length ≥ 1; anchor layers strictly increase (one bridge per
    anchor layer); augmenting layers never decrease (pairs keep the models' order; one
    augmenting layer may feed several anchor layers when the anchor is deeper).
    """

    augmenting: tuple[int, ...]
    anchor: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "augmenting", tuple(int(i) for i in self.augmenting))
        object.__setattr__(self, "anchor", tuple(int(j) for j in self.anchor))
        if len(self.augmenting) != len(self.anchor):
            raise ValueError(
                f"A layer map needs as many augmenting layers as anchor layers; got "
                f"{len(self.augmenting)} augmenting {list(self.augmenting)} and {len(self.anchor)} anchor {list(self.anchor)}."
            )
        if not self.anchor:
            raise ValueError("A layer map needs at least one (augmenting, anchor) pair.")
        if any(b <= a for a, b in zip(self.anchor, self.anchor[1:])):
            raise ValueError(f"Anchor layers must strictly increase; got {list(self.anchor)}.")
        if any(b < a for a, b in zip(self.augmenting, self.augmenting[1:])):
            raise ValueError(f"Augmenting layers must not decrease; got {list(self.augmenting)}.")

    @classmethod
    def from_pairs(cls, pairs: Sequence[Sequence[int]]) -> "LayerMap":
        bad = [p for p in pairs if not isinstance(p, (list, tuple)) or len(p) != 2]
        if bad:
            raise ValueError(f"Layer pairs are (augmenting_layer, anchor_layer) tuples; got {bad[0]!r}.")
        return cls(tuple(i for i, _ in pairs), tuple(j for _, j in pairs))

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.augmenting, self.anchor))

    def __len__(self) -> int:
        return len(self.anchor)

    def check(self, augmenting: ModelShape, anchor: ModelShape) -> "LayerMap":
        """Raise ``ValueError`` if a layer index is outside its model; return ``self``."""
        for name, layers, shape in (("augmenting", self.augmenting, augmenting), ("anchor", self.anchor, anchor)):
            bad = [i for i in layers if not EMBEDDINGS <= i < shape.num_layers]
            if bad:
                raise ValueError(
                    f"{name.capitalize()} layer(s) {bad} out of range: the {name} model has "
                    f"{shape.num_layers} layers, numbered 0..{shape.num_layers - 1} (-1: the embeddings)."
                )
        return self


def evenly_spaced(num_layers: int, n: int) -> list[int]:
    """``n`` evenly spaced 0-based layers of ``num_layers``, always ending at the last one.

    With ``n > num_layers`` layers repeat (used for the augmenting side of :class:`Evenly`).

    >>> evenly_spaced(30, 3)
    [9, 19, 29]
    >>> evenly_spaced(2, 4)
    [0, 0, 1, 1]
    """
    if n < 1:
        raise ValueError(f"Cannot choose {n} layers: n must be at least 1.")
    return [max(0, math.floor((m + 1) * num_layers / n + 0.5) - 1) for m in range(n)]


@dataclass(frozen=True)
class EveryK:
    """The paper's default: every ``k``-th augmenting layer (``k-1, 2k-1, …``), n = N_A // k,
    joined to ``n`` evenly spaced anchor layers."""

    k: int = 4

    def resolve(self, augmenting: ModelShape, anchor: ModelShape) -> LayerMap:
        if self.k < 1:
            raise ValueError(f"k must be ≥ 1; got {self.k}.")
        n = augmenting.num_layers // self.k
        if n == 0:
            raise ValueError(
                f"Every {self.k}-th layer of a {augmenting.num_layers}-layer augmenting model gives no bridge: "
                f"choose k ≤ {augmenting.num_layers}."
            )
        n = min(n, anchor.num_layers)
        return LayerMap(tuple(self.k * (m + 1) - 1 for m in range(n)), tuple(evenly_spaced(anchor.num_layers, n)))


@dataclass(frozen=True)
class Evenly:
    """``n`` bridges, evenly spaced on both sides. ``n`` may exceed the augmenting depth
    (augmenting layers are then reused) but not the anchor's."""

    n: int

    def resolve(self, augmenting: ModelShape, anchor: ModelShape) -> LayerMap:
        if not 1 <= self.n <= anchor.num_layers:
            raise ValueError(f"Evenly({self.n}) needs 1 ≤ n ≤ {anchor.num_layers} (the anchor's layers).")
        aug = evenly_spaced(augmenting.num_layers, self.n)
        return LayerMap(tuple(aug), tuple(evenly_spaced(anchor.num_layers, self.n)))


LayerSpec = Union[int, EveryK, Evenly, LayerMap, Sequence[Sequence[int]]]


def resolve_layer_map(spec: LayerSpec, augmenting: ModelShape, anchor: ModelShape) -> LayerMap:
    """Turn any accepted layer specification into a checked :class:`LayerMap`."""
    if isinstance(spec, bool):
        raise TypeError("layers must be an int k, EveryK(k), Evenly(n), a LayerMap or a list of pairs; got a bool.")
    if isinstance(spec, int):
        spec = EveryK(spec)
    if isinstance(spec, (EveryK, Evenly)):
        spec = spec.resolve(augmenting, anchor)
    elif not isinstance(spec, LayerMap):
        if not isinstance(spec, (list, tuple)):
            raise TypeError(
                f"layers must be an int k, EveryK(k), Evenly(n), a LayerMap or a list of pairs; got {spec!r}."
            )
        spec = LayerMap.from_pairs(list(spec))
    return spec.check(augmenting, anchor)


def bridge_parameter_count(augmenting_dim: int, anchor_dim: int, n: int = 1, recency_heads: int = 0) -> int:
    """Trainable parameters of ``n`` bridges: n·(D_A·D_B + 4·D_B²) + n·5·D_B biases.

    D_A·D_B is the projection f_proj; 4·D_B² are the query, key, value and output matrices of
    the cross-attention (the paper's formula leaves out the output matrix W^O); each of those
    five linear maps has a D_B bias. With the recency bias each bridge adds one slope per head
    (``recency_heads``).
    """
    return n * (augmenting_dim * anchor_dim + 4 * anchor_dim**2 + 5 * anchor_dim + recency_heads)


def summary(
    layer_map: LayerMap, augmenting: ModelShape, anchor: ModelShape, num_heads: int, recency_bias: bool = False
) -> str:
    """A printable table of the bridges with their dimensions and parameter count."""
    per_bridge = bridge_parameter_count(augmenting.hidden_size, anchor.hidden_size, 1, num_heads * recency_bias)
    lines = [
        f"augmenting: {augmenting.model_type}, {augmenting.num_layers} layers, D_A={augmenting.hidden_size}",
        f"anchor:     {anchor.model_type}, {anchor.num_layers} layers, D_B={anchor.hidden_size}, "
        f"bridge heads={num_heads}" + (", recency bias" if recency_bias else ""),
        f"{'bridge':>6}  {'aug layer':>9}  {'anchor layer':>12}  {'params':>10}",
    ]
    lines += [f"{b:>6}  {i:>9}  {j:>12}  {per_bridge:>10,}" for b, (i, j) in enumerate(layer_map.pairs)]
    formula = "D_A·D_B + 4·D_B² + 5·D_B" + (" + heads" if recency_bias else "")
    lines.append(f"total: {len(layer_map)} bridges × ({formula}) = {per_bridge * len(layer_map):,} parameters")
    return "\n".join(lines)

