"""Named hook points: places in the composition where a reader can record or change what flows.

In the spirit of TransformerLens's ``HookPoint``: each point is an identity module with a name
(``bridges.0.hook_attention``), so ``model.hook_points()`` lists them and PyTorch's own forward
hooks record or replace what passes. ``model.hooks({...})`` scopes hooks to a block::

    with model.hooks({"bridges.0.hook_output": lambda module, args, out: out * 0}):
        model(ids)                       # bridge 0 silenced for this call only

Each bridge has ``hook_augmenting`` (H_A^i it reads, (B, S, D_A)), ``hook_attention`` (its
weights, (B, H, T, S); computed only while a hook listens) and ``hook_output`` (what it adds to
H_B^j, (B, T, D_B)). The model has ``hook_reading``: what the anchor tokens of each call read
(a :class:`calm_mini.core.state.Reading`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from .layers import EMBEDDINGS


class HookPoint(nn.Module):
    """An identity module to hang forward hooks on; ``active`` says whether any is hung."""

    def forward(self, x):
        return x

    @property
    def active(self) -> bool:
        return bool(self._forward_hooks or self._forward_pre_hooks)


@contextlib.contextmanager
def scoped_hooks(points: Mapping[str, HookPoint], hooks: Mapping[str, Callable]) -> Iterator[None]:
    """Register ``hooks`` (name → forward hook) on the named ``points`` for the block; always removed."""
    unknown = sorted(set(hooks) - set(points))
    if unknown:
        raise KeyError(f"No hook point {unknown[0]!r}; the hook points are: {', '.join(points)}.")
    handles = [points[name].register_forward_hook(hook) for name, hook in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def on_layer_output(layers: nn.ModuleList, i: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> RemovableHandle:
    """Call ``fn`` on the hidden states (B, T, D) leaving decoder layer ``i`` (``-1``: those
    entering layer 0, the embeddings); a tensor it returns replaces them. Works for layers that
    return a tensor or a tuple, and take the states positionally or as ``hidden_states``."""
    if i == EMBEDDINGS:

        def before(module, args, kwargs):
            new = fn(args[0] if args else kwargs["hidden_states"])
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return layers[0].register_forward_pre_hook(before, with_kwargs=True)

    def after(module, args, output):
        new = fn(output[0] if isinstance(output, tuple) else output)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return layers[i].register_forward_hook(after)


@torch.no_grad()
def states_after(model: nn.Module, layers: nn.ModuleList, wanted: set[int], **inputs) -> dict[int, torch.Tensor]:
    """Run ``model(**inputs)`` and return the hidden states (B, T, D) leaving each layer in
    ``wanted`` (-1: entering layer 0), by layer index."""
    captured: dict[int, torch.Tensor] = {}
    handles = [on_layer_output(layers, i, functools.partial(captured.__setitem__, i)) for i in wanted]
    try:
        model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


class AttentionRecord:
    """Attention weights captured per bridge, across the anchor calls of one forward or generate.

    ``record[b]`` is (B, H, anchor_len, augmenting_len) for bridge ``b``: during cached generation
    each step adds one anchor row that reads a longer augmenting prefix; the rows are stacked
    and the positions a row could not read yet are exact zeros. A call that starts a new
    sequence starts the record afresh, so it always covers the latest sequence.
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

    def hooks(self, n_bridges: int) -> dict[str, Callable]:
        """The forward hooks that fill this record: one per bridge's attention, and one that
        starts afresh when a call begins a new sequence."""

        def recorder(b: int):
            return lambda module, args, weights: self.add(b, weights)

        def on_reading(module, args, reading):
            if reading.past == 0:
                self.chunks.clear()

        return {"hook_reading": on_reading, **{f"bridges.{b}.hook_attention": recorder(b) for b in range(n_bridges)}}
