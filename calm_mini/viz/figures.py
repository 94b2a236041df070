"""See what the anchor reads: plotly figures of the bridges' cross-attention, of the layer map
and of training curves (the explorer is in :mod:`.explorer` and :mod:`.export`).

Everything renders with no internet: saved HTML embeds plotly.js, and :func:`set_renderer`
never picks a renderer that fetches plotly.js from a CDN. Figures are plain
``plotly.graph_objects.Figure``s built from tensors the composed model captured::

    with model.capture_attention() as record:
        model(ids)
    attention_heatmap(record[0][0], tokens, tokens)        # bridge 0, prompt 0, head average
    attention_grid(record, tokens)                         # every bridge × head
    AttentionExplorer(model, tokenizer, prompt="…")        # in a notebook
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..core import BridgeSpec, ComposedModel, ModelShape

COLORSCALE = "Blues"
HIGHLIGHT = "crimson"


def head_weights(weights: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """One head of one bridge for one prompt, or the head average.

    Args:
        weights: (H, T, S), e.g. ``record[b][i]``, or (T, S) already reduced over heads.
        head: a head index, or ``None`` for the mean over heads.
    Returns:
        (T, S) float tensor.
    """
    if not torch.is_tensor(weights) or weights.dim() not in (2, 3):
        shape = tuple(weights.shape) if torch.is_tensor(weights) else type(weights).__name__
        raise ValueError(
            f"weights must be (heads, anchor_len, augmenting_len) for one prompt (e.g. record[b][0]) or "
            f"(anchor_len, augmenting_len); got {shape}."
        )
    if weights.dim() == 2:
        if head is not None:
            raise ValueError(f"weights (T, S) have no head axis; pass head=None, not head={head}.")
        return weights.float()
    if head is None:
        return weights.float().mean(0)
    if not 0 <= head < weights.shape[0]:
        heads = weights.shape[0]
        raise ValueError(f"head {head} does not exist: the bridge has {heads} heads, 0..{heads - 1}.")
    return weights[head].float()


def _check_tokens(z: torch.Tensor, anchor_tokens: Sequence[str], augmenting_tokens: Sequence[str]) -> None:
    T, S = z.shape
    if len(anchor_tokens) != T or len(augmenting_tokens) != S:
        raise ValueError(
            f"The weights cover {T} anchor × {S} augmenting positions but {len(anchor_tokens)} anchor and "
            f"{len(augmenting_tokens)} augmenting tokens were given; pass one label per position."
        )


def _heatmap_trace(
    z: torch.Tensor, anchor_tokens: Sequence[str], augmenting_tokens: Sequence[str], **kwargs
) -> go.Heatmap:
    """Heatmap on integer positions (so repeated tokens stay separate), tokens in the hover.

    z: (T, S); row t is what anchor position t reads of augmenting positions 0..S-1.
    """
    text = [
        [f"anchor {t} {a!r} reads augmenting {s} {b!r}" for s, b in enumerate(augmenting_tokens)]
        for t, a in enumerate(anchor_tokens)
    ]
    return go.Heatmap(
        z=z.tolist(),
        x=list(range(len(augmenting_tokens))),
        y=list(range(len(anchor_tokens))),
        text=text,
        hovertemplate="%{text}<br>weight %{z:.4f}<extra></extra>",
        **kwargs,
    )


def _token_axes(fig: go.Figure, anchor_tokens: Sequence[str], augmenting_tokens: Sequence[str], **where) -> None:
    """Token text as tick labels; anchor rows top to bottom as in an attention matrix."""
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(augmenting_tokens))), ticktext=list(augmenting_tokens),
                     tickangle=-45, **where)
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(anchor_tokens))), ticktext=list(anchor_tokens),
                     autorange="reversed", **where)


def _row_highlight(row: int) -> dict:
    return dict(type="rect", xref="x domain", x0=0, x1=1, yref="y", y0=row - 0.5, y1=row + 0.5,
                line=dict(color=HIGHLIGHT, width=3))


def attention_heatmap(
    weights: torch.Tensor,
    anchor_tokens: Sequence[str],
    augmenting_tokens: Sequence[str] | None = None,
    head: int | None = None,
    title: str | None = None,
    highlight: int | None = None,
) -> go.Figure:
    """What each anchor token (row) reads of the augmenting tokens (columns) through one bridge.

    Args:
        weights: (H, T, S) of one bridge for one prompt (``record[b][i]``), or (T, S).
        anchor_tokens, augmenting_tokens: T and S labels (default: the anchor's, since both
            models read the same input).
        head: a head, or ``None`` for the average over heads.
        highlight: an anchor position whose row gets a frame.
    """
    augmenting_tokens = anchor_tokens if augmenting_tokens is None else augmenting_tokens
    z = head_weights(weights, head)
    _check_tokens(z, anchor_tokens, augmenting_tokens)
    fig = go.Figure(_heatmap_trace(z, anchor_tokens, augmenting_tokens, colorscale=COLORSCALE, zmin=0))
    _token_axes(fig, anchor_tokens, augmenting_tokens)
    default_title = "head average" if head is None else f"head {head}"
    fig.update_layout(title=title or default_title, xaxis_title="augmenting token (keys, values)",
                      yaxis_title="anchor token (query)")
    if highlight is not None:
        if not 0 <= highlight < z.shape[0]:
            raise ValueError(f"highlight={highlight} is not an anchor position 0..{z.shape[0] - 1}.")
        fig.add_shape(_row_highlight(highlight))
    return fig


def _record_bridges(record) -> list[int]:
    return record.bridges() if hasattr(record, "bridges") else sorted(record)


def attention_grid(
    record,
    anchor_tokens: Sequence[str],
    augmenting_tokens: Sequence[str] | None = None,
    batch_index: int = 0,
) -> go.Figure:
    """Every bridge (rows) × head (columns) for one prompt, on one colour scale.

    Args:
        record: an ``AttentionRecord`` or a mapping bridge → (B, H, T, S) weights.
        batch_index: which prompt of the batch.
    """
    augmenting_tokens = anchor_tokens if augmenting_tokens is None else augmenting_tokens
    bridges = _record_bridges(record)
    if not bridges:
        raise ValueError("The record is empty: run the composed model inside `with model.capture_attention()`.")
    weights = {b: record[b] for b in bridges}
    batch = weights[bridges[0]].shape[0]
    if not 0 <= batch_index < batch:
        raise ValueError(f"batch_index={batch_index} is outside the recorded batch of {batch} prompt(s).")
    heads = max(w.shape[1] for w in weights.values())
    fig = make_subplots(
        rows=len(bridges), cols=heads, shared_xaxes=True, shared_yaxes=True,
        horizontal_spacing=0.02, vertical_spacing=min(0.08, 0.4 / len(bridges)),
        subplot_titles=[f"bridge {b} · head {h}" for b in bridges for h in range(heads)],
    )
    for row, b in enumerate(bridges, start=1):
        for h in range(weights[b].shape[1]):
            z = head_weights(weights[b][batch_index], h)
            _check_tokens(z, anchor_tokens, augmenting_tokens)
            trace = _heatmap_trace(z, anchor_tokens, augmenting_tokens, coloraxis="coloraxis")
            fig.add_trace(trace, row=row, col=h + 1)
    _token_axes(fig, anchor_tokens, augmenting_tokens)
    fig.update_layout(coloraxis=dict(colorscale=COLORSCALE, cmin=0), height=120 + 220 * len(bridges),
                      title="what the anchor reads, per bridge and head")
    return fig


# ---------------------------------------------------------------------------- layer map
def _depth(layer: int, shape: ModelShape) -> float:
    """Height of a layer in a column, as a fraction of its model's depth (layer 0 at the bottom,
    the embeddings, layer -1, below it)."""
    return (layer + 0.5) / shape.num_layers


def _column(augmenting: int) -> int:
    """x of augmenting model ``augmenting``: alternately left and right of the anchor at x = 0."""
    return -(augmenting // 2 + 1) if augmenting % 2 == 0 else augmenting // 2 + 1


def _layer_column(fig: go.Figure, x: int, shape: ModelShape, name: str, width: str) -> None:
    """One model's layers as a column of squares at ``x`` (the embeddings, "emb", at the bottom),
    headed by its name, depth and width."""
    layers = range(-1, shape.num_layers)
    fig.add_scatter(
        x=[x] * len(layers), y=[_depth(i, shape) for i in layers], mode="markers+text",
        text=["emb" if i < 0 else f"L{i}" for i in layers], textposition="middle right" if x >= 0 else "middle left",
        marker=dict(symbol="square", size=14, color="lightgray", line=dict(color="gray", width=1)),
        name=name, hovertemplate=f"{name} layer %{{text}}<extra></extra>", showlegend=False,
    )
    header = f"{name}: {shape.model_type}<br>{shape.num_layers} layers, {width}={shape.hidden_size}"
    fig.add_annotation(x=x, y=1.02, yanchor="bottom", text=header, showarrow=False)


def layer_map_figure(model: ComposedModel) -> go.Figure:
    """The anchor's layers (centre column) and each augmenting model's (beside it), with every
    bridge drawn as a link from augmenting layer i to anchor layer j, labelled with its
    trainable parameters. Widths D_A, D_B head the columns."""
    anchor, fig = model.calm_config.anchor, go.Figure()
    _layer_column(fig, 0, anchor, "anchor", "D_B")
    for a, shape in enumerate(model.calm_config.augmenting):
        _layer_column(fig, _column(a), shape, f"augmenting {a}", "D_A")
    for b, spec in enumerate(model.specs):
        params = sum(p.numel() for p in model.bridges[b].parameters())
        x = [_column(spec.augmenting), 0]
        y = [_depth(spec.augmenting_layer, model.calm_config.augmenting[spec.augmenting]), _depth(spec.anchor_layer, anchor)]
        fig.add_scatter(
            x=x, y=y, mode="lines", name=f"bridge {b}", line=dict(width=3),
            meta=dict(augmenting=spec.augmenting, augmenting_layer=spec.augmenting_layer,
                      anchor_layer=spec.anchor_layer, parameters=params),
            hovertemplate=f"{bridge_label(b, spec)}<br>{params:,} parameters<extra></extra>",
        )
        fig.add_annotation(x=sum(x) / 2, y=sum(y) / 2, text=f"bridge {b}<br>{params:,}", showarrow=False,
                           bgcolor="white", font=dict(size=10))
    total = model.num_bridge_parameters()
    shapes = [anchor, *model.calm_config.augmenting]
    columns = [0, *(_column(a) for a in range(len(model.calm_config.augmenting)))]
    anchor_params = sum(p.numel() for p in model.anchor.parameters())
    fig.update_layout(
        title=f"{len(model.specs)} bridges, {total:,} trainable parameters ({total / anchor_params:.1%} of the "
              f"anchor's {anchor_params:,}); {model.calm_config.num_heads} heads",
        xaxis=dict(visible=False, range=[min(columns) - 0.6, max(columns) + 0.6]),
        yaxis=dict(visible=False, range=[min(-0.05, *(_depth(-1, s) - 0.05 for s in shapes)), 1.2]),
        plot_bgcolor="white", height=500,
    )
    return fig


def bridge_label(b: int, spec: BridgeSpec) -> str:
    """'bridge 0: augmenting 0 layer 1 → anchor layer 3'."""
    return (f"bridge {b}: augmenting {spec.augmenting} layer {spec.augmenting_layer} "
            f"→ anchor layer {spec.anchor_layer}")


# ---------------------------------------------------------------------------- training curves
def _series(log: Sequence[Mapping]) -> dict[str, tuple[list, list]]:
    """metric name → (steps, values), from the entries that hold a number for it."""
    if not log:
        raise ValueError("The training log is empty.")
    series: dict[str, tuple[list, list]] = {}
    for n, entry in enumerate(log):
        if not isinstance(entry, Mapping) or not _is_number(entry.get("step")):
            raise ValueError(f"Log entry {n} must be a dict with a numeric 'step'; got {entry!r}.")
        for name, value in entry.items():
            if name not in ("step", "lr") and _is_number(value):
                steps, values = series.setdefault(name, ([], []))
                steps.append(entry["step"])
                values.append(value)
    if not series:
        raise ValueError("The training log holds no numeric metric besides 'step'.")
    return series


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def training_curves(log: Sequence[Mapping], title: str = "training") -> go.Figure:
    """Every numeric metric of a training log against steps: losses on top, the rest (accuracy,
    ``acc/kv_math``, …) below.

    Args:
        log: ``[{"step": 10, "loss": 1.2}, {"step": 20, "loss": 0.9, "accuracy": 0.5}, …]``; a
            metric may be missing from some entries.
    """
    series = _series(log)
    losses = [name for name in series if "loss" in name.lower()]
    others = [name for name in series if name not in losses]
    other_title = "accuracy" if others and all("acc" in name.lower() for name in others) else "metric"
    panels = [(label, names) for label, names in (("loss", losses), (other_title, others)) if names]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for row, (label, names) in enumerate(panels, start=1):
        for name in names:
            steps, values = series[name]
            fig.add_scatter(x=steps, y=values, name=name, mode="lines+markers", row=row, col=1)
        fig.update_yaxes(title_text=label, row=row, col=1)
    fig.update_xaxes(title_text="step", row=len(panels), col=1)
    fig.update_layout(title=title, height=250 + 200 * len(panels))
    return fig


def results_chart(table: Mapping[str, Mapping[str, float]], title: str = "exact match (%)") -> go.Figure:
    """Grouped bars of accuracies: one group per task, one bar per model.

    Args:
        table: ``{task: {model: accuracy %}}``, e.g. the ``table`` of ``kv_results.json``.
    """
    models = list(dict.fromkeys(m for row in table.values() for m in row))
    tasks = list(table)
    fig = go.Figure()
    for model in models:
        values = [table[t].get(model) for t in tasks]
        fig.add_bar(name=model, x=tasks, y=values, text=[f"{v:.0f}" if v is not None else "" for v in values],
                    textposition="outside")
    fig.update_layout(title=title, barmode="group", yaxis=dict(title="exact match (%)", range=[0, 110]),
                      legend=dict(orientation="h", y=-0.15))
    return fig
