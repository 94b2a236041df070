"""calm_mini: CALM (Composition to Augment Language Models) as a small, tested teaching kit.

>>> from calm_mini import compose, ComposedModel
>>> model = compose(anchor, augmenting, layers=4)   # doctest: +SKIP

The method lives in :mod:`calm_mini.core`; different tokenizers in :mod:`calm_mini.crosstok`;
training in :mod:`calm_mini.training`; models in :mod:`calm_mini.models`; the experiments in
:mod:`calm_mini.experiments`; figures and the explorer in :mod:`calm_mini.viz`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

from . import crosstok  # registers the cross-tokenizer variant of compose()
from .core import (
    EMBEDDINGS,
    Bridge,
    CALMConfig,
    ComposedModel,
    EveryK,
    Evenly,
    HookPoint,
    LayerMap,
    ModelShape,
    bridge_parameter_count,
    compose,
    decoder_layers,
)

__all__ = [
    "EMBEDDINGS", "Bridge", "CALMConfig", "ComposedModel", "EveryK", "Evenly", "HookPoint", "LayerMap", "ModelShape",
    "bridge_parameter_count", "compose", "crosstok", "decoder_layers",
]
__version__ = "0.1.0"

# Modules of the flat layout before the reorganisation, and where their contents live now.
MOVED = {
    "calm_mini.compose": "calm_mini.core",
    "calm_mini.layers": "calm_mini.core.layers",
    "calm_mini.bridge": "calm_mini.core.bridge",
    "calm_mini.files": "calm_mini.core.files",
    "calm_mini.train": "calm_mini.training",
    "calm_mini.evaluate": "calm_mini.evaluation",
    "calm_mini.catalogue": "calm_mini.models.catalogue",
    "calm_mini.basemodels": "calm_mini.experiments.kv",
    "calm_mini.experiment": "calm_mini.experiments.kv",
    "calm_mini.facts": "calm_mini.experiments.facts",
    "calm_mini.data": "calm_mini.experiments.kv.data",
    "calm_mini.data.kv": "calm_mini.experiments.kv.data",
    "calm_mini.data.facts": "calm_mini.experiments.facts.world",
    "calm_mini.data.chars": "calm_mini.crosstok.chars",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import calm_mini.compose`` (an old place) gives a module that forwards to the new
    place, with a DeprecationWarning naming it."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import from there.", DeprecationWarning, stacklevel=3)
        target = importlib.import_module(new)
        module = types.ModuleType(spec.name, f"Moved to {new}.")

        def forward(attribute):
            try:
                return getattr(target, attribute)
            except AttributeError:
                raise AttributeError(f"{spec.name} moved to {new}, which has no {attribute!r}.") from None

        module.__getattr__ = forward
        module.__path__ = []  # so that old submodules (calm_mini.data.kv) can be imported too
        return module

    def exec_module(self, module):
        pass

    def get_code(self, name):
        """For ``python -m calm_mini.catalogue``: run the new module as ``__main__``."""
        return compile(f"import runpy; runpy.run_module({MOVED[name]!r}, run_name='__main__', alter_sys=True)",
                       f"<{name}, moved to {MOVED[name]}>", "exec")


sys.meta_path.append(_MovedModules())
