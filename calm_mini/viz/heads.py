"""Which bridge head reads a token's own augmenting state: a measurement on an attention record,
used to pick the view a figure opens on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class HeadChoice:
    """A (bridge, head) and its attention from each chosen anchor position onto the augmenting
    slot of the same position (``weights[i]`` for ``positions[i]``); ``elsewhere``: the same
    attention averaged over the other positions but the first."""

    bridge: int
    head: int
    positions: tuple[int, ...]
    weights: tuple[float, ...]
    elsewhere: float

    @property
    def mean(self) -> float:
        return sum(self.weights) / len(self.weights)

    @property
    def score(self) -> float:
        """How much more the head reads its own token at ``positions`` than elsewhere."""
        return self.mean - self.elsewhere


def own_token_head(attention: Sequence[torch.Tensor], positions: Sequence[int]) -> HeadChoice:
    """The (bridge, head) that reads the own augmenting state of the tokens at ``positions`` most
    selectively: its attention from anchor position ``p`` onto augmenting slot ``p`` (the same
    token, as both models read it) averaged over ``positions``, minus that average over the other
    positions but the first (which can read nothing else). A head that reads every token's own
    state, as a steep recency slope does, scores 0; one that reads the keys and looks elsewhere
    from the other tokens scores up to 1.

    Args:
        attention: one (H, T, S) tensor per bridge for one prompt, e.g. ``Analysis.attention``;
            slot ``p`` must be token ``p`` (one unpadded prompt read by both models, so S == T).
        positions: the anchor positions to measure, e.g. those of the keys in a prompt.
    Returns:
        the first (bridge, head) of the largest score, with its weight at each position.
    """
    if not attention:
        raise ValueError("attention is empty: pass one (H, T, S) tensor per bridge, e.g. Analysis.attention.")
    shapes = {tuple(w.shape) for w in attention}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"attention must hold (H, T, S) tensors of one shape per bridge; got shapes {sorted(shapes)}.")
    heads, anchor_len, augmenting_len = next(iter(shapes))
    if anchor_len != augmenting_len:
        raise ValueError(f"anchor length {anchor_len} != augmenting slots {augmenting_len}: slot p is token p only "
                         "when both models read the same tokens of one unpadded prompt.")
    positions = tuple(int(p) for p in positions)
    if not positions or not all(0 <= p < anchor_len for p in positions):
        raise ValueError(f"positions {list(positions)}: give at least one position in 0..{anchor_len - 1}.")
    own = torch.stack([w.float().diagonal(dim1=-2, dim2=-1) for w in attention])  # (B, H, T): row p, column p
    chosen = torch.zeros(anchor_len, dtype=torch.bool)
    chosen[list(positions)] = True
    others = ~chosen
    others[0] = False
    elsewhere = own[..., others].mean(-1) if others.any() else torch.zeros(own.shape[:2])  # (B, H)
    best = int((own[..., list(positions)].mean(-1) - elsewhere).flatten().argmax())
    bridge, head = divmod(best, heads)
    return HeadChoice(bridge, head, positions, tuple(float(own[bridge, head, p]) for p in positions),
                      float(elsewhere[bridge, head]))
