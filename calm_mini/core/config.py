"""One dataclass for a composition: what :func:`compose` builds, what the model keeps, and what
``calm_config.json`` holds. Saving writes :meth:`CALMConfig.to_dict`, loading reads it back with
:meth:`CALMConfig.from_dict`, so save → load round-trips by construction (as peft's
``adapter_config.json``).

Variants of the composition register their class under a name (``@register_variant("…")``);
the config names its variant, and loading builds that class.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch

from .layers import LayerMap, ModelShape

FORMAT = "calm_mini"
VERSION = 2  # 2 added bridge_dtype and variant; version 1 files load with their defaults
SHARED_TOKENS = "shared_tokens"
VARIANTS: dict[str, type] = {}


def register_variant(name: str) -> Callable[[type], type]:
    """Class decorator: build saved compositions of variant ``name`` with this class."""

    def register(cls: type) -> type:
        VARIANTS[name] = cls
        return cls

    return register


def variant_class(name: str) -> type:
    if name not in VARIANTS:
        raise ValueError(f"Unknown composition variant {name!r}; known: {', '.join(sorted(VARIANTS))}. "
                         "Import the module that defines it (e.g. calm_mini.crosstok) before loading.")
    return VARIANTS[name]


@dataclass(frozen=True)
class BridgeSpec:
    """Where one bridge sits: augmenting model ``augmenting`` (index), its layer, the anchor layer."""

    augmenting: int
    augmenting_layer: int
    anchor_layer: int


@dataclass(frozen=True)
class CALMConfig:
    """Everything that decides a composition's bridges, and the identities of its base models.

    Attributes:
        anchor, augmenting: the shapes (and names) of m_B and of each m_A.
        layer_maps: one :class:`LayerMap` per augmenting model.
        num_heads: cross-attention heads of every bridge.
        recency_bias, normalize_inputs: the bridge options (see :mod:`calm_mini.core.bridge`).
        bridge_dtype: the bridges' parameter dtype, by name (``"float32"``).
        layers_paths: attribute paths of the decoder layers (``None``: found automatically).
        variant: the registered class that builds it (``"shared_tokens"``: both models read the
            same token ids).
        tokenizers: identities of both tokenizers, for variants that need them.
    """

    anchor: ModelShape
    augmenting: tuple[ModelShape, ...]
    layer_maps: tuple[LayerMap, ...]
    num_heads: int
    recency_bias: bool = False
    normalize_inputs: bool = False
    bridge_dtype: str = "float32"
    layers_paths: dict = field(default_factory=lambda: {"anchor": None, "augmenting": None})
    variant: str = SHARED_TOKENS
    tokenizers: dict | None = None

    def __post_init__(self):
        if len(self.layer_maps) != len(self.augmenting):
            raise ValueError(f"{len(self.layer_maps)} layer maps for {len(self.augmenting)} augmenting models.")
        if not isinstance(getattr(torch, self.bridge_dtype, None), torch.dtype):
            raise ValueError(f"bridge_dtype={self.bridge_dtype!r} is not a torch dtype name (e.g. 'float32').")
        paths = self.layers_paths.get("augmenting") or [None] * len(self.augmenting)
        object.__setattr__(self, "layers_paths", {"anchor": self.layers_paths.get("anchor"), "augmenting": list(paths)})

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.bridge_dtype)

    def bridge_specs(self) -> list[BridgeSpec]:
        """One :class:`BridgeSpec` per bridge, in the order of the model's ``bridges``."""
        return [BridgeSpec(a, i, j) for a, layer_map in enumerate(self.layer_maps) for i, j in layer_map.pairs]

    def to_dict(self) -> dict:
        """What ``calm_config.json`` holds (plain JSON values)."""
        data = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: dict) -> "CALMConfig":
        """Read :meth:`to_dict`'s output, or a version 1 file (before ``bridge_dtype`` and ``variant``)."""
        if data.get("format") != FORMAT or data.get("version") not in (1, VERSION):
            raise ValueError(f"This is not a calm_mini bridge config of version 1 or {VERSION}.")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if data["version"] == 1 and data.get("tokenizers"):
            values["variant"] = "cross_tokenizer"
        values["anchor"] = ModelShape(**data["anchor"])
        values["augmenting"] = tuple(ModelShape(**m) for m in data["augmenting"])
        values["layer_maps"] = tuple(LayerMap(tuple(m["augmenting"]), tuple(m["anchor"])) for m in data["layer_maps"])
        return cls(**values)
