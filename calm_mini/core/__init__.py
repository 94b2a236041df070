"""The CALM method only, in reading order: ``layers`` (find decoder layers, layer maps) →
``bridge`` (the paper's equation) → ``composed`` (the model: hooks, forward, cached generate)
with ``state`` (what a sequence keeps) and ``hooks`` (named hook points) → ``config`` (one
``CALMConfig`` == ``calm_config.json``), ``saving`` → ``factory`` (``compose()``).

Nothing here imports the rest of calm_mini.
"""

from .bridge import Bridge
from .composed import ComposedModel
from .config import BridgeSpec, CALMConfig, register_variant
from .factory import compose
from .hooks import AttentionRecord, HookPoint
from .layers import EMBEDDINGS, EveryK, Evenly, LayerMap, ModelShape, bridge_parameter_count, decoder_layers
from .state import Reading, SequenceState, positions_from_mask

__all__ = [
    "EMBEDDINGS", "AttentionRecord", "Bridge", "BridgeSpec", "CALMConfig", "ComposedModel", "EveryK", "Evenly",
    "HookPoint", "LayerMap", "ModelShape", "Reading", "SequenceState", "bridge_parameter_count", "compose",
    "decoder_layers", "positions_from_mask", "register_variant",
]
