"""What a composed sequence keeps between calls, and what one call's anchor tokens read.

A composed sequence is generated call by call: the prompt, then one token at a time. Each call
feeds the new tokens to every augmenting model (its KV cache holds the earlier ones) and appends
each bridge's keys and values for them; the anchor's own cache is Hugging Face's. The
:class:`SequenceState` follows the anchor cache it belongs to; a :class:`Reading` is built
afresh for each call.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from .layers import ModelShape


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


def causal_mask(attention_mask: torch.Tensor | None, past: int, new: int, device) -> torch.Tensor | None:
    """(B, new, past+new) bool: anchor position t reads augmenting position s iff s ≤ t and
    both are real tokens (``attention_mask`` (B, past+new), 1 for real tokens).

    ``None`` when no token is padding: the plain causal order, which the bridges then leave to
    attention's own causal masking instead of building this tensor at every decoding step.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    query = torch.arange(past, past + new, device=device)
    key = torch.arange(past + new, device=device)
    real = attention_mask.bool()  # (B, past+new)
    return (key[None, :] <= query[:, None]) & real[:, None, :] & real[:, -new:, None]  # (B, new, past+new)


def check_inputs(input_ids, attention_mask, past: int, readers: dict[str, ModelShape]) -> None:
    """Raise ``ValueError`` unless ``input_ids`` is a non-empty (B, T) integer tensor within the
    vocabulary of every model in ``readers`` (role → shape: the models that read the ids) and
    ``attention_mask`` is None or (B, past+T)."""
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point():
        what = f"shape {tuple(input_ids.shape)}, dtype {input_ids.dtype}" if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (batch, length) tensor of token ids; got {what}.")
    batch, new = input_ids.shape
    if new == 0:
        raise ValueError("input_ids is empty (length 0): give at least one token, e.g. the BOS token.")
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, past + new):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {tuple(input_ids.shape)} "
                         f"(plus {past} cached tokens) need ({batch}, {past + new}).")
    vocab = min(shape.vocab_size for shape in readers.values())
    low, high = (bound.item() for bound in input_ids.aminmax())  # one pass over the ids
    if low < 0 or high >= vocab:
        raise ValueError(f"input_ids hold ids outside 0..{vocab - 1}, the vocabulary of the {' and the '.join(readers)}.")


def check_length(length: int, readers: dict[str, ModelShape]) -> None:
    """Raise ``ValueError`` if a sequence of ``length`` tokens is longer than a model accepts."""
    for role, shape in readers.items():
        if shape.max_positions is not None and length > shape.max_positions:
            raise ValueError(f"The sequence has {length} tokens but the {role.split()[0]} model ({shape.model_type}) "
                             f"accepts at most {shape.max_positions}; shorten the input or max_new_tokens.")


class GrowingKV:
    """Keys or values (B, H, S, d) that grow along S, in a buffer with room to spare, so that
    appending one decoding step copies that step only (not the whole sequence, as a
    ``torch.cat`` would)."""

    def __init__(self, first: torch.Tensor):
        self.buffer, self.length = first, first.shape[2]

    def append(self, new: torch.Tensor) -> None:
        """Append (B, H, n, d); :attr:`filled` is then (B, H, S + n, d)."""
        end = self.length + new.shape[2]
        if end > self.buffer.shape[2]:
            grown = new.new_empty(*new.shape[:2], max(2 * end, 16), new.shape[3])
            grown[:, :, : self.length] = self.buffer[:, :, : self.length]
            self.buffer = grown
        self.buffer[:, :, self.length : end] = new
        self.length = end

    @property
    def filled(self) -> torch.Tensor:
        return self.buffer[:, :, : self.length]

    def select(self, rows: torch.LongTensor) -> None:
        """Keep batch rows ``rows`` (B',), in that order (beam search's reordering)."""
        self.buffer = self.buffer.index_select(0, rows)


@dataclass
class SequenceState:
    """What a composed sequence keeps between cached calls.

    augmenting_caches: one Hugging Face cache per augmenting model (``None`` without caching).
    keys, values: per bridge, everything appended so far (what the next call's anchor tokens
        may read), or ``None`` before the first call.
    length: anchor tokens so far.
    extra: room for a variant's own state (e.g. the cross-tokenizer alignment); if it has batch
        rows, it has a ``select(rows)`` method like this class's.
    """

    augmenting_caches: list
    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)
    length: int = 0
    extra: Any = None

    def select(self, rows: torch.LongTensor) -> None:
        """Keep batch rows ``rows`` (B',), in that order, in everything the sequence holds: what
        beam search does to the anchor's cache at every step, done to the augmenting side."""
        for cache in self.augmenting_caches:
            if cache is not None:
                cache.reorder_cache(rows)
        for kv in (self.keys, self.values):
            for b, x in enumerate(kv):  # GrowingKV, or a variant's plain (B, H, S, d) tensors
                if isinstance(x, GrowingKV):
                    x.select(rows)
                elif x is not None:
                    kv[b] = x.index_select(0, rows)
        if self.extra is not None and hasattr(self.extra, "select"):
            self.extra.select(rows)


class Sequences:
    """The :class:`SequenceState` of each cached sequence, kept with its anchor cache (weakly: it
    goes when the cache goes)."""

    def __init__(self):
        self._by_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def select(self, cache, rows: torch.LongTensor) -> None:
        """Keep batch rows ``rows`` of the sequence that follows ``cache`` (if it has begun)."""
        sequence = self._by_cache.get(cache)
        if sequence is not None:
            sequence.select(rows)

    def for_call(self, cache, past: int, augmenting) -> SequenceState:
        """A fresh state for a new sequence (``past == 0``; with a cache for each augmenting
        model when the anchor is cached), or the one that follows ``cache``."""
        if past == 0:
            sequence = SequenceState([DynamicCache(config=m.config) if cache is not None else None for m in augmenting])
            if cache is not None:
                self._by_cache[cache] = sequence
            return sequence
        sequence = self._by_cache.get(cache)
        if sequence is None or sequence.length != past:
            raise RuntimeError("This anchor cache was not made by this composed model's last call on it (the "
                               "augmenting caches do not follow it). Start the sequence again without a cache.")
        return sequence


class ComposedCache(DynamicCache):
    """The anchor's cache in composed calls: a ``DynamicCache`` that, when beam search reorders
    its batch rows (``reorder_cache``, at every step), reorders the augmenting caches and the
    bridges' keys/values of its sequence the same way. (With a plain cache the anchor would
    follow the beams while the augmenting side stayed with the old rows.)"""

    def __init__(self, sequences: Sequences, **kwargs):
        super().__init__(**kwargs)
        self.sequences = sequences

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self.sequences.select(self, beam_idx)


@dataclass
class Reading:
    """What the ``new`` anchor tokens of one call read, per bridge.

    keys, values: per bridge, (B, H, S, d).
    mask: (B, new, S) bool, which of the S augmenting positions each anchor token may read;
        ``None``: the plain causal order with nothing padded (the new tokens are the last
        ``new`` of the S and read the positions up to their own).
    distance: (new, S) or (B, new, S), anchor position minus augmenting position (for the
        recency bias; ``None`` without it).
    past: anchor tokens before this call (0: a new sequence).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor | None
    distance: torch.Tensor | None
    past: int
