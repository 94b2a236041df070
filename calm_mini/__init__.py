"""calm_mini: CALM (Composition to Augment Language Models) as a small, tested teaching kit.

>>> from calm_mini import compose, ComposedModel
>>> model = compose(anchor, augmenting, layers=4)   # doctest: +SKIP
"""

from .bridge import Bridge
from .compose import ComposedModel, compose
from .layers import EMBEDDINGS, EveryK, Evenly, LayerMap, ModelShape, bridge_parameter_count, decoder_layers

__all__ = [
    "EMBEDDINGS",
    "Bridge",
    "ComposedModel",
    "EveryK",
    "Evenly",
    "LayerMap",
    "ModelShape",
    "bridge_parameter_count",
    "compose",
    "decoder_layers",
]
__version__ = "0.1.0"
