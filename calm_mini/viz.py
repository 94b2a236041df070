"""See what the anchor reads: plotly figures of the bridges' cross-attention, of the layer map
and of training curves, and an ipywidgets explorer that can also be exported as one HTML file.

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

import html
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

from .compose import BridgeSpec, ComposedModel
from .files import atomic_write
from .layers import ModelShape

COLORSCALE = "Blues"
HIGHLIGHT = "crimson"

# ---------------------------------------------------------------------------- renderers
# Colab and VS Code ship their own plotly renderers; a Jupyter kernel gets the plotly mimetype
# (drawn by the jupyterlab-plotly extension that comes with the plotly wheel) plus the
# "notebook" HTML that embeds plotly.js for the classic notebook and nbconvert. CI and plain
# Python get JSON: nothing is drawn and no browser opens.
RENDERERS = {
    "colab": "colab",
    "vscode": "vscode",
    "jupyter": "plotly_mimetype+notebook",
    "ci": "json",
    "python": "json",
}
KERNEL_SHELL = "ZMQInteractiveShell"


def environment_of(env: Mapping[str, str], modules: Collection[str], shell: str | None) -> str:
    """Where the code runs, decided from environment variables, imported modules and the
    IPython shell's class name (``None`` without IPython). One of :data:`RENDERERS`' keys."""
    if env.get("CI", "").lower() in ("1", "true", "yes") or env.get("GITHUB_ACTIONS") == "true":
        return "ci"
    if "google.colab" in modules or "COLAB_RELEASE_TAG" in env:
        return "colab"
    if shell != KERNEL_SHELL:
        return "python"
    return "vscode" if "VSCODE_PID" in env else "jupyter"


def renderer_for(environment: str, env: Mapping[str, str]) -> str:
    """The plotly renderer for ``environment``; ``PLOTLY_RENDERER`` in ``env`` wins."""
    if environment not in RENDERERS:
        raise ValueError(f"Unknown environment {environment!r}; expected one of {sorted(RENDERERS)}.")
    return env.get("PLOTLY_RENDERER") or RENDERERS[environment]


def detect_environment() -> str:
    """:func:`environment_of` for this process."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return environment_of(os.environ, set(sys.modules), type(shell).__name__ if shell is not None else None)


def set_renderer(renderer: str | None = None) -> str:
    """Set plotly's default renderer (chosen for this environment unless given); return it."""
    pio.renderers.default = renderer or renderer_for(detect_environment(), os.environ)
    return pio.renderers.default


# ---------------------------------------------------------------------------- saving
def save_figure(fig: go.Figure, path: str | os.PathLike, png: bool = True) -> list[Path]:
    """Write ``fig`` as standalone HTML with plotly.js embedded (works offline), and as PNG
    when ``png`` and kaleido is installed and works. Files are written atomically.

    Args:
        path: ``out/heatmap`` or ``out/heatmap.html`` (a ``.png`` suffix is replaced too).
    Returns:
        the paths written, the HTML first.
    """
    base = Path(path)
    if base.suffix.lower() in (".html", ".htm", ".png"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    written = [_write_html(fig.to_html(include_plotlyjs=True, full_html=True), base.parent / f"{base.name}.html")]
    if png and importlib.util.find_spec("kaleido") is not None:
        target = base.parent / f"{base.name}.png"
        try:
            atomic_write(target, lambda tmp: fig.write_image(tmp, format="png"))
            written.append(target)
        except Exception:  # kaleido present but unusable (e.g. no Chrome for kaleido 1.x): HTML only
            pass
    return written


def _write_html(text: str, path: Path) -> Path:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


# ---------------------------------------------------------------------------- attention figures
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
    anchor, fig = model.anchor_shape, go.Figure()
    _layer_column(fig, 0, anchor, "anchor", "D_B")
    for a, shape in enumerate(model.augmenting_shapes):
        _layer_column(fig, _column(a), shape, f"augmenting {a}", "D_A")
    for b, spec in enumerate(model.specs):
        params = sum(p.numel() for p in model.bridges[b].parameters())
        x = [_column(spec.augmenting), 0]
        y = [_depth(spec.augmenting_layer, model.augmenting_shapes[spec.augmenting]), _depth(spec.anchor_layer, anchor)]
        fig.add_scatter(
            x=x, y=y, mode="lines", name=f"bridge {b}", line=dict(width=3),
            meta=dict(augmenting=spec.augmenting, augmenting_layer=spec.augmenting_layer,
                      anchor_layer=spec.anchor_layer, parameters=params),
            hovertemplate=f"{bridge_label(b, spec)}<br>{params:,} parameters<extra></extra>",
        )
        fig.add_annotation(x=sum(x) / 2, y=sum(y) / 2, text=f"bridge {b}<br>{params:,}", showarrow=False,
                           bgcolor="white", font=dict(size=10))
    total = model.num_bridge_parameters()
    shapes = [anchor, *model.augmenting_shapes]
    columns = [0, *(_column(a) for a in range(len(model.augmenting_shapes)))]
    anchor_params = sum(p.numel() for p in model.anchor.parameters())
    fig.update_layout(
        title=f"{len(model.specs)} bridges, {total:,} trainable parameters ({total / anchor_params:.1%} of the "
              f"anchor's {anchor_params:,}); {model.num_heads} heads",
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


# ---------------------------------------------------------------------------- explorer logic
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
    """The composed model's and the anchor's top-k as an HTML table."""
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{pc:.3f}</td><td>{html.escape(a)}</td><td>{pa:.3f}</td></tr>"
        for (c, pc), (a, pa) in zip(view.composed, view.anchor)
    )
    return ("<table><tr><th>composed</th><th>p</th><th>anchor</th><th>p</th></tr>" + rows + "</table>")


# ---------------------------------------------------------------------------- the widget
AVERAGE = "average"


class AttentionExplorer(widgets.VBox):
    """Prompt box, bridge / head / token selectors, the heatmap, and the composed model's and
    the anchor's top-k next tokens at the selected token. Display it as the last line of a cell.

    The figure is drawn into an ``ipywidgets.Output`` as the mime bundle of plotly's default
    renderer (call :func:`set_renderer` first); JupyterLab draws it with the jupyterlab-plotly
    extension of the plotly wheel: no internet, no ``anywidget``. ``self.figure`` and
    ``self.view`` hold what is shown.
    """

    def __init__(self, model: ComposedModel, tokenizer=None, prompt: str = "", k: int = 5):
        self.model, self.codec, self.k = model, as_codec(tokenizer), k
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="60%"))
        self.bridge = widgets.Dropdown(description="bridge",
                                       options=[(bridge_label(b, s), b) for b, s in enumerate(model.specs)])
        self.head = widgets.Dropdown(description="head",
                                     options=[(AVERAGE, AVERAGE)] + [(f"head {h}", h) for h in range(model.num_heads)])
        self.token = widgets.Dropdown(description="token")
        self.plot, self.predictions, self.message = widgets.Output(), widgets.HTML(), widgets.HTML()
        super().__init__([self.prompt, widgets.HBox([self.bridge, self.head, self.token]),
                          widgets.HBox([self.plot, self.predictions]), self.message])
        self.analysis: Analysis | None = None
        self.view: View | None = None
        self._quiet = False
        self.prompt.observe(lambda _: self._analyse(), names="value")
        for selector in (self.bridge, self.head, self.token):
            selector.observe(lambda _: self._render(), names="value")
        self._analyse()

    @property
    def figure(self) -> go.Figure | None:
        return self.view.figure if self.view is not None else None

    def _analyse(self) -> None:
        if not self.prompt.value.strip():
            self.message.value = "Type a prompt (token ids separated by spaces if there is no tokenizer)."
            return
        try:
            self.analysis = analyse(self.model, self.prompt.value, self.codec)
        except ValueError as err:
            self.message.value = f"<b>Cannot run this prompt:</b> {html.escape(str(err))}"
            return
        self._quiet = True
        self.token.options = [(f"{t}: {tok}", t) for t, tok in enumerate(self.analysis.tokens)]
        self.token.value = len(self.analysis.tokens) - 1
        self._quiet = False
        self._render()

    def _render(self) -> None:
        if self._quiet or self.analysis is None:
            return
        head = None if self.head.value == AVERAGE else self.head.value
        self.view = explore(self.analysis, self.bridge.value, head, self.token.value, self.k)
        # plotly's mimetype alone: the JupyterLab/VS Code/Colab renderers draw it, and the cell
        # does not receive another copy of plotly.js on every change
        bundle = {"application/vnd.plotly.v1+json": json.loads(self.view.figure.to_json()), "text/plain": "<figure>"}
        self.plot.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
        self.predictions.value = predictions_html(self.view)
        self.message.value = ""


# ---------------------------------------------------------------------------- offline HTML explorer
# Two plotly dropdowns (bridge, head) emit `plotly_buttonclicked`; this script shows the one
# heatmap trace for the chosen pair. The token slider is plain plotly (`update`): it moves the
# row frame and fills the predictions table.
_SELECT_SCRIPT = """
var gd = document.getElementById('{plot_id}');
gd.on('plotly_buttonclicked', function () {
  var menus = gd.layout.updatemenus;
  var shown = (menus[0].active || 0) * %(choices)d + (menus[1].active || 0);
  Plotly.restyle(gd, {visible: gd.data.map(function (t, i) { return t.type !== 'heatmap' || i === shown; })});
});
"""


def _table_values(composed: list[tuple[str, float]], anchor: list[tuple[str, float]]) -> list[list]:
    """Columns of the predictions table: composed token, p, anchor token, p."""
    return [[c for c, _ in composed], [f"{p:.3f}" for _, p in composed],
            [a for a, _ in anchor], [f"{p:.3f}" for _, p in anchor]]


def explorer_figure(analysis: Analysis, k: int = 5) -> go.Figure:
    """The explorer as one plotly figure: a heatmap trace per (bridge, head or average), only
    the first visible; bridge and head dropdowns; a token slider driving the predictions table.

    Trace ``b * (H + 1) + 1 + h`` is bridge ``b``, head ``h``; ``b * (H + 1)`` its average.
    """
    heads = analysis.attention[0].shape[0]
    last = len(analysis.tokens) - 1
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        specs=[[{"type": "heatmap"}, {"type": "table"}]])
    for b, weights in enumerate(analysis.attention):
        for h in [None, *range(heads)]:
            trace = _heatmap_trace(head_weights(weights, h), analysis.tokens, analysis.tokens, coloraxis="coloraxis",
                                   visible=b == 0 and h is None, name=f"bridge {b} {AVERAGE if h is None else h}")
            fig.add_trace(trace, row=1, col=1)
    tables = [_table_values(*predictions(analysis, t, k)) for t in range(last + 1)]
    header = dict(values=["composed: next", "p", "anchor: next", "p"])
    fig.add_trace(go.Table(header=header, cells=dict(values=tables[last])), row=1, col=2)
    table = len(fig.data) - 1
    _token_axes(fig, analysis.tokens, analysis.tokens, row=1, col=1)
    menu = dict(type="dropdown", direction="down", showactive=True, yanchor="bottom", y=1.08)
    steps = [dict(method="update", label=f"{t}: {tok}",
                  args=[{"cells.values": [values]}, {"shapes[0].y0": t - 0.5, "shapes[0].y1": t + 0.5}, [table]])
             for t, (tok, values) in enumerate(zip(analysis.tokens, tables))]
    fig.update_layout(
        coloraxis=dict(colorscale=COLORSCALE, cmin=0, colorbar=dict(x=0.57, xanchor="left")),
        height=620, margin=dict(t=120),
        shapes=[_row_highlight(last)],
        updatemenus=[
            dict(menu, x=0.0, xanchor="left", active=0,
                 buttons=[dict(method="skip", label=bridge_label(b, s), args=[{}])
                          for b, s in enumerate(analysis.specs)]),
            dict(menu, x=0.56, xanchor="right", active=0,
                 buttons=[dict(method="skip", label=AVERAGE, args=[{}])]
                 + [dict(method="skip", label=f"head {h}", args=[{}]) for h in range(heads)]),
        ],
        sliders=[dict(active=last, steps=steps, currentvalue=dict(prefix="token "), pad=dict(t=60))],
        title=dict(text="what the anchor reads (rows: anchor tokens, columns: augmenting tokens)", y=0.98),
    )
    return fig


def explorer_html(
    model: ComposedModel,
    prompt: str | Sequence[int] | torch.Tensor,
    tokenizer=None,
    k: int = 5,
    path: str | os.PathLike | None = None,
) -> str:
    """The explorer as one standalone HTML page (plotly.js embedded, works offline).

    Returns:
        the HTML; also written atomically to ``path`` (``.html`` added if missing) when given.
    """
    analysis = analyse(model, prompt, tokenizer)
    fig = explorer_figure(analysis, k)
    script = _SELECT_SCRIPT % {"choices": analysis.attention[0].shape[0] + 1}
    text = fig.to_html(include_plotlyjs=True, full_html=True, post_script=script)
    if path is not None:
        path = Path(path)
        path = path if path.suffix.lower() in (".html", ".htm") else path.parent / f"{path.name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_html(text, path)
    return text
