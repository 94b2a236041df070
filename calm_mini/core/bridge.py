"""One CALM bridge, read beside the paper's equation (Bansal et al. 2024, §3.1).

For a pair of layers (i, j) of the augmenting model m_A and the anchor m_B::

    H_A' = f_proj(H_A^i)                                   # (B, S, D_A) -> (B, S, D_B)
    f_cross(H_A', H_B^j) = Concat_k(head_k) W^O             # multi-head cross-attention
    head_k = softmax(mask(Q_k K_k^T / sqrt(d))) V_k         # Q from H_B^j, K and V from H_A'
    H_B^j <- H_B^j + f_cross(H_A', H_B^j)                    # residual into the anchor

W^O starts at zero, so a freshly composed model computes exactly what the anchor computes.
Which augmenting positions an anchor position may read (causal order, padding) comes in as a
boolean mask built by :mod:`calm_mini.core.state`, or as ``None`` for the plain causal order
with nothing padded; this module only attends.

Two options of the kit's own, off by default (the README says what each buys):

* ``recency_bias``: head h adds ``-slope_h · (t - s)`` to its scores (ALiBi-style, one learned
  slope per head, starting at 8, 2, 0.5, …), so a bridge can find the augmenting state of its
  own token by position, not only by content;
* ``normalize_inputs``: RMS-normalise (without parameters) the anchor states before the query
  and the augmenting states before ``f_proj``, as a pre-norm layer does before attention, and
  multiply the output by the RMS of the anchor state it is added to (a constant for backward),
  so that neither the scores nor W^O depend on the scale of the base models' hidden states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import HookPoint


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
        self.hook_augmenting = HookPoint()  # H_A^i read, (B, S, D_A)
        self.hook_attention = HookPoint()  # weights, (B, H, T, S); computed only while hooked
        self.hook_output = HookPoint()  # f_cross(...), added to H_B^j, (B, T, D_B)
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
        augmenting_states = self.hook_augmenting(augmenting_states)
        projected = self.proj(self._normalized(augmenting_states.to(self.proj.weight.dtype)))  # (B, S, D_B)
        return self._split_heads(self.key(projected)), self._split_heads(self.value(projected))

    def forward(
        self,
        anchor_states: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        distance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The bridge's contribution f_cross(f_proj(H_A^i), H_B^j), to be added to H_B^j.

        Args:
            anchor_states: H_B^j, (B, T, D_B).
            keys, values: from :meth:`keys_values`, (B, H, S, d).
            mask: (B, T, S) bool, True where anchor position t may read augmenting position s.
                A row with no True entry reads nothing: its heads are zero, so only W^O's bias is added.
                ``None``: the plain causal order, nothing padded (the T anchor positions are the
                last T of the S, and each reads the positions up to its own).
            distance: (T, S) or (B, T, S), t - s in tokens; used by ``recency_bias``.
        Returns:
            delta, (B, T, D_B). While ``hook_attention`` is hooked the weights (B, H, T, S) are
            computed explicitly and pass through it (a hook may change them).
        """
        B, T, D = anchor_states.shape
        S = keys.shape[2]
        dtype = self.query.weight.dtype
        q = self._split_heads(self.query(self._normalized(anchor_states.to(dtype))))  # (B, H, T, d)
        if mask is None and T in (1, S) and self.recency is None and not self.hook_attention.active:
            # Attention's own causal masking (one query reads all S): on CPU the same numbers as
            # the explicit mask below, bit for bit (tests/test_composed.py), without building it.
            heads = F.scaled_dot_product_attention(q, keys, values, is_causal=T > 1)  # (B, H, T, d)
            return self._output(heads.transpose(1, 2).reshape(B, T, D), anchor_states)
        if mask is None:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T).expand(B, T, S)
        readable = mask.any(dim=-1, keepdim=True)  # (B, T, 1)
        # Rows with nothing to read may see everything (avoids NaN); their heads are zeroed below.
        attn_mask = (mask | ~readable).unsqueeze(1)  # (B, 1, T, S)
        if self.recency is not None:
            slopes = F.softplus(self.recency).view(-1, 1, 1)  # (H, 1, 1)
            bias = -slopes * distance.to(dtype).unsqueeze(-3)  # (1 or B, H, T, S)
            attn_mask = bias.masked_fill(~attn_mask, float("-inf"))
        if self.hook_attention.active:
            scores = q @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
            weights = self.hook_attention(scores.softmax(dim=-1) * readable.unsqueeze(1))
            heads = weights @ values
        else:
            heads = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)
        return self._output(heads.transpose(1, 2).reshape(B, T, D) * readable, anchor_states)

    def _output(self, heads: torch.Tensor, anchor_states: torch.Tensor) -> torch.Tensor:
        """W^O applied to the concatenated heads (B, T, D_B), in the anchor's dtype."""
        delta = self.out(heads)  # (B, T, D_B)
        if self.normalize_inputs:  # in units of each anchor state's RMS, a constant for backward
            delta = delta * anchor_states.to(self.query.weight.dtype).pow(2).mean(-1, keepdim=True).sqrt().detach()
        return self.hook_output(delta.to(anchor_states.dtype))
