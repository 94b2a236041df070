"""The explorer's logic, without widgets: one prompt through the composed model (attention
captured) and the anchor alone, and what to show for a chosen bridge, head and token."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable, Sequence

import plotly.graph_objects as go
import torch

from ..core import BridgeSpec, ComposedModel
from .figures import attention_heatmap, bridge_label

AVERAGE = "average"  # the head choice that shows the mean over heads


@dataclass(frozen=True)
class Codec:
    """How the explorer turns a prompt into ids and an id into a visible token label."""

    encode: Callable[[str], list[int]]
    decode: Callable[[int], str]


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError as err:
        raise ValueError(
            f"Without a tokenizer the prompt is token ids separated by spaces, e.g. '5 17 42'; got {text!r}."
        ) from err


def _visible(token: str) -> str:
    """Show the whitespace inside a token: ' the' → '␣the'."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def as_codec(tokenizer=None) -> Codec:
    """A :class:`Codec` from a Hugging Face tokenizer, a decode function ``id -> str`` (prompts
    are then ids), or ``None`` (prompts are ids and the labels are the ids themselves)."""
    if isinstance(tokenizer, Codec):
        return tokenizer
    if tokenizer is None:
        return Codec(_parse_ids, str)
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode"):
        return Codec(lambda text: list(tokenizer.encode(text)), lambda i: _visible(tokenizer.decode([i])))
    if callable(tokenizer):
        return Codec(_parse_ids, lambda i: _visible(str(tokenizer(i))))
    raise TypeError(
        f"Expected a Hugging Face tokenizer, a function id -> str, or None; got {type(tokenizer).__name__}."
    )


@dataclass
class Analysis:
    """One prompt through the composed model (attention captured) and through the anchor alone.

    ids: (T,); tokens: T labels; attention[b]: (H, T, T) for bridge b;
    composed_logits, anchor_logits: (T, V).
    """

    ids: torch.Tensor
    tokens: list[str]
    attention: list[torch.Tensor]
    composed_logits: torch.Tensor
    anchor_logits: torch.Tensor
    specs: list[BridgeSpec]
    decode: Callable[[int], str]


def prompt_ids(prompt: str | Sequence[int] | torch.Tensor, codec: Codec) -> torch.Tensor:
    """A prompt as (T,) ids: text through the codec, or ids given as a list or a (T,) / (1, T) tensor."""
    ids = torch.as_tensor(codec.encode(prompt) if isinstance(prompt, str) else prompt, dtype=torch.long)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"The explorer takes one non-empty prompt, (T,) or (1, T) ids; got shape {tuple(ids.shape)}.")
    return ids


@torch.no_grad()
def analyse(model: ComposedModel, prompt: str | Sequence[int] | torch.Tensor, tokenizer=None) -> Analysis:
    """Run one prompt through the composed model and the anchor; keep what the explorer shows."""
    codec = as_codec(tokenizer)
    ids = prompt_ids(prompt, codec).to(next(model.anchor.parameters()).device)
    with model.capture_attention() as record:
        composed = model(ids[None]).logits[0]
    return Analysis(
        ids=ids.cpu(),
        tokens=[codec.decode(int(i)) for i in ids],
        attention=[record[b][0].float().cpu() for b in range(len(model.specs))],
        composed_logits=composed.float().cpu(),
        anchor_logits=model.anchor(ids[None]).logits[0].float().cpu(),
        specs=list(model.specs),
        decode=codec.decode,
    )


def top_predictions(logits: torch.Tensor, position: int, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` most likely next tokens after ``position``, as (id, probability).

    Args:
        logits: (T, V) of one prompt.
    """
    if not 0 <= position < logits.shape[0]:
        raise ValueError(f"position {position} is not a token position 0..{logits.shape[0] - 1}.")
    probs, ids = logits[position].float().softmax(-1).topk(min(k, logits.shape[-1]))
    return [(int(i), float(p)) for i, p in zip(ids, probs)]


@dataclass
class View:
    """What the explorer shows for one selection: the heatmap and both models' top-k
    (label, probability) next tokens at the selected position."""

    figure: go.Figure
    composed: list[tuple[str, float]]
    anchor: list[tuple[str, float]]


def explore(analysis: Analysis, bridge: int, head: int | None = None, token: int | None = None, k: int = 5) -> View:
    """The explorer's state for a bridge, a head (``None``: average) and an anchor position
    (``None``: the last one, whose prediction continues the prompt)."""
    if not 0 <= bridge < len(analysis.attention):
        raise ValueError(f"bridge {bridge} does not exist: the model has bridges 0..{len(analysis.attention) - 1}.")
    token = len(analysis.tokens) - 1 if token is None else token
    figure = attention_heatmap(analysis.attention[bridge], analysis.tokens, head=head, highlight=token,
                               title=f"{bridge_label(bridge, analysis.specs[bridge])}, "
                                     f"{'head average' if head is None else f'head {head}'}")
    return View(figure, *predictions(analysis, token, k))


def predictions(analysis: Analysis, token: int, k: int = 5) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The composed model's and the anchor's top-k (label, probability) after position ``token``."""

    def labelled(logits):
        return [(analysis.decode(i), p) for i, p in top_predictions(logits, token, k)]

    return labelled(analysis.composed_logits), labelled(analysis.anchor_logits)


def predictions_html(view: View) -> str:
    """The composed model's and the anchor's top-k as an HTML table: padded cells, numbers
    right-aligned (inline styles, so every notebook front end keeps them)."""
    pad = "padding:2px 10px;"
    head = "".join(f'<th style="{pad}text-align:{side}">{name}</th>'
                   for name, side in (("composed", "left"), ("p", "right"), ("anchor", "left"), ("p", "right")))

    def cells(token: str, p: float) -> str:
        return (f'<td style="{pad}text-align:left"><code>{html.escape(token)}</code></td>'
                f'<td style="{pad}text-align:right;font-variant-numeric:tabular-nums">{p:.3f}</td>')

    rows = "".join(f"<tr>{cells(c, pc)}{cells(a, pa)}</tr>" for (c, pc), (a, pa) in zip(view.composed, view.anchor))
    return f'<table class="calm-predictions" style="border-collapse:collapse"><tr>{head}</tr>{rows}</table>'

