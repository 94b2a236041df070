"""Bridges on disk: ``calm_config.json`` (the :class:`CALMConfig`) and ``bridges.safetensors``
(the bridges' weights by name), nothing else. Each file is written under a temporary name and
renamed into place, so an interrupted save never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .files import atomic_write
from .config import CALMConfig, variant_class
from .layers import ModelShape

CONFIG_NAME = "calm_config.json"
WEIGHTS_NAME = "bridges.safetensors"


def save(folder: str | os.PathLike, config: CALMConfig, state: dict[str, torch.Tensor]) -> None:
    """Write the weights, then the config (so a folder with a config is complete)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(folder / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    text = json.dumps(config.to_dict(), indent=2)
    atomic_write(folder / CONFIG_NAME, lambda path: Path(path).write_text(text))


def read_config(folder: str | os.PathLike) -> CALMConfig:
    """The :class:`CALMConfig` saved in ``folder``, with clear errors for a missing or corrupt save."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}; save bridges with ComposedModel.save_pretrained.")
    try:
        return CALMConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / CONFIG_NAME} is not valid JSON ({err}); the save is corrupt.") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / CONFIG_NAME} is not a calm_mini bridge config ({err}).") from err


def load(folder: str | os.PathLike, anchor: nn.Module, augmenting: Sequence[nn.Module]
         ) -> tuple[CALMConfig, dict[str, torch.Tensor]]:
    """The saved config and weights, after checking that the given base models fit them.

    Raises:
        ValueError: a base model's architecture, depth, width or vocabulary differs from the
            saved one, the number of augmenting models differs, or the weights are unreadable.
    """
    config = read_config(folder)
    paths = config.layers_paths
    _check_fits("anchor", config.anchor, ModelShape.of(anchor, paths["anchor"]))
    if len(augmenting) != len(config.augmenting):
        raise ValueError(f"The saved bridges join {len(config.augmenting)} augmenting model(s); {len(augmenting)} given.")
    for a, (model, saved) in enumerate(zip(augmenting, config.augmenting)):
        _check_fits(f"augmenting model {a}", saved, ModelShape.of(model, paths["augmenting"][a]))
    try:
        state = load_file(Path(folder) / WEIGHTS_NAME)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"Cannot read {Path(folder) / WEIGHTS_NAME}: {err}. The save is corrupt; save it again.") from err
    return config, state


def load_composition(cls: type, folder: str | os.PathLike, anchor: nn.Module, augmenting, **variant_options):
    """Rebuild the composition saved in ``folder`` as the variant it was saved from, which must
    be ``cls`` or a subclass (``ComposedModel.from_pretrained`` loads any variant)."""
    augmenting = list(augmenting) if isinstance(augmenting, (list, tuple, nn.ModuleList)) else [augmenting]
    config, state = load(folder, anchor, augmenting)
    variant = variant_class(config.variant)
    if not issubclass(variant, cls):
        raise ValueError(f"{folder} holds a {config.variant!r} composition; load it with "
                         f"{variant.__name__}.from_pretrained or ComposedModel.from_pretrained.")
    model = variant(anchor, augmenting, config, **variant_options)
    load_bridges(model.bridges, state, folder)
    return model


def load_bridges(bridges: nn.Module, state: dict[str, torch.Tensor], folder) -> None:
    """Copy ``state`` into ``bridges``, refusing weights that do not match the config."""
    expected = set(bridges.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"{Path(folder) / WEIGHTS_NAME} does not match its config: missing {sorted(missing)[:4]}, "
                         f"unexpected {sorted(unexpected)[:4]}.")
    bridges.load_state_dict(state)


def _check_fits(role: str, saved: ModelShape, given: ModelShape) -> None:
    diffs = saved.fits(given)
    if diffs:
        raise ValueError(f"The {role} does not fit the saved bridges (saved for "
                         f"{saved.name_or_path or 'an unnamed model'}): " + "; ".join(diffs))
