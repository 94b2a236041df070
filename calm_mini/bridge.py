"""One CALM bridge, read beside the paper's equation (Bansal et al. 2024, §3.1).

For a pair of layers (i, j) of the augmenting model m_A and the anchor m_B::

    H_A' = f_proj(H_A^i)                                   # (B, S, D_A) -> (B, S, D_B)
    f_cross(H_A', H_B^j) = Concat_k(head_k) W^O             # multi-head cross-attention
    head_k = softmax(mask(Q_k K_k^T / sqrt(d))) V_k         # Q from H_B^j, K and V from H_A'
    H_B^j <- H_B^j + f_cross(H_A', H_B^j)                    # residual into the anchor

W^O starts at zero, so a freshly composed model computes exactly what the anchor computes.
Which augmenting positions an anchor position may read (causal order, padding) comes in as a
boolean mask built by :mod:`calm_mini.compose`; this module only attends.

The paper's cross-attention has no notion of position: an anchor token can find "the augmenting
state of *my own* token" only by content, and for a token the anchor has never learnt (a new
key, a rare word) its content says nothing. With ``recency_bias=True`` head h adds
``-slope_h · (t - s)`` to its scores (ALiBi-style; one learned slope per head, starting at
8, 2, 0.5, … so that the first head reads the current token and later heads look further back).
This is the kit's addition, off by default; the key-value experiment measures what it buys.

Real pretrained models can have large hidden states (SmolLM2-135M's residual stream: norms of
hundreds in the upper layers, ~26 000 at the first token), and the bridge's query·key scores grow
with them: attention can start sharp and locked onto positions chosen by content, where the
recency slopes count for little. With ``normalize_inputs=True`` the bridge RMS-normalises (without
parameters) the anchor states before the query and the augmenting states before ``f_proj``, as
every pre-norm transformer layer does before its own attention, so the scores no longer depend
on the scale of either model; and it multiplies its output by the RMS of the anchor state it is
added to, so that W^O works in units of that state: the same W^O moves a state of norm 450 as
much as one of norm 5 (without this, W^O must grow ~20×, the RMS of SmolLM2's upper states,
before a bridge can overrule a confident anchor there; on the facts demo, :mod:`calm_mini.facts`,
the training loss after 200 steps is 3.5× lower with it). The RMS is a constant for backward:
with gradients through it, training turned NaN. Composite and anchor then scale together: multiply both
models' states by s and every bridge attends the same and adds s times as much. Off by default:
the key-value and cross-tokenizer results were made without it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Bridge(nn.Module):
    """Projection D_A → D_B, then multi-head cross-attention from the anchor to the projected
    augmenting states, with a zero-initialised output projection.

    Args:
        augmenting_dim: D_A, width of the augmenting model's hidden states.
        anchor_dim: D_B, width of the anchor's hidden states.
        num_heads: attention heads; must divide ``anchor_dim``.
        recency_bias: add a learned per-head penalty on the distance t - s (adds ``num_heads``
            parameters).
        normalize_inputs: RMS-normalise both inputs (no parameters), for base models with
            large hidden states; the output is then multiplied by the RMS of
            the anchor state it is added to.
    """

    def __init__(
        self, augmenting_dim: int, anchor_dim: int, num_heads: int, recency_bias: bool = False,
        normalize_inputs: bool = False,
    ):
        super().__init__()
        if num_heads < 1 or anchor_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide the anchor width D_B={anchor_dim}; "
                f"choose a divisor of {anchor_dim} (the anchor's own head count usually is one)."
            )
        self.num_heads = num_heads
        self.normalize_inputs = normalize_inputs
        self.head_dim = anchor_dim // num_heads
        self.proj = nn.Linear(augmenting_dim, anchor_dim)  # f_proj
        self.query = nn.Linear(anchor_dim, anchor_dim)
        self.key = nn.Linear(anchor_dim, anchor_dim)
        self.value = nn.Linear(anchor_dim, anchor_dim)
        self.out = nn.Linear(anchor_dim, anchor_dim)  # W^O
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.recency = None
        if recency_bias:  # softplus(recency) = slopes 8, 2, 0.5, … at the start
            slopes = 8.0 * 4.0 ** -torch.arange(num_heads, dtype=torch.float64)
            self.recency = nn.Parameter(torch.log(torch.expm1(slopes)).float())

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, x.shape[-1:]) if self.normalize_inputs else x

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def keys_values(self, augmenting_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project augmenting states to attention keys and values.

        Args:
            augmenting_states: H_A^i, shape (B, S, D_A).
        Returns:
            keys, values, each (B, H, S, d) with H·d = D_B. These are what generation caches.
        """
        projected = self.proj(self._normalized(augmenting_states.to(self.proj.weight.dtype)))  # (B, S, D_B)
        return self._split_heads(self.key(projected)), self._split_heads(self.value(projected))

    def forward(
        self,
        anchor_states: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        distance: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The bridge's contribution f_cross(f_proj(H_A^i), H_B^j), to be added to H_B^j.

        Args:
            anchor_states: H_B^j, (B, T, D_B).
            keys, values: from :meth:`keys_values`, (B, H, S, d).
            mask: (B, T, S) bool, True where anchor position t may read augmenting position s.
                A row with no True entry gets a zero output (nothing to read).
            distance: (T, S) or (B, T, S), t - s in tokens; used by ``recency_bias``.
            need_weights: also return the attention weights (a slower, explicit path).
        Returns:
            (delta, weights): delta (B, T, D_B); weights (B, H, T, S) or None.
        """
        B, T, D = anchor_states.shape
        dtype = self.query.weight.dtype
        q = self._split_heads(self.query(self._normalized(anchor_states.to(dtype))))  # (B, H, T, d)
        readable = mask.any(dim=-1, keepdim=True)  # (B, T, 1)
        # Rows with nothing to read may see everything (avoids NaN); their output is zeroed below.
        attn_mask = (mask | ~readable).unsqueeze(1)  # (B, 1, T, S)
        if self.recency is not None:
            slopes = F.softplus(self.recency).view(-1, 1, 1)  # (H, 1, 1)
            bias = -slopes * distance.to(dtype).unsqueeze(-3)  # (1 or B, H, T, S)
            attn_mask = bias.masked_fill(~attn_mask, float("-inf"))
        if need_weights:
            scores = q @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
            weights = scores.softmax(dim=-1) * readable.unsqueeze(1)
            heads = weights @ values
        else:
            weights = None
            heads = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)
        heads = heads.transpose(1, 2).reshape(B, T, D) * readable  # (B, T, D_B)
        delta = self.out(heads)  # (B, T, D_B)
        if self.normalize_inputs:  # in units of each anchor state's RMS, a constant for backward
            delta = delta * anchor_states.to(dtype).pow(2).mean(-1, keepdim=True).sqrt().detach()
        return delta.to(anchor_states.dtype), weights
