"""The explorer as one standalone HTML page: plotly dropdowns and a slider, no kernel, offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..core import ComposedModel
from .analysis import AVERAGE, Analysis, analyse, predictions
from .figures import COLORSCALE, _heatmap_trace, _row_highlight, _token_axes, bridge_label, head_weights
from .renderers import _write_html

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


def _check_view(analysis: Analysis, bridge: int, head: int | None, token: int | None) -> int:
    """Raise ``ValueError`` for a view the explorer does not have; return the token position."""
    bridges, heads, tokens = len(analysis.attention), analysis.attention[0].shape[0], len(analysis.tokens)
    if not 0 <= bridge < bridges:
        raise ValueError(f"bridge {bridge} does not exist: the model has bridges 0..{bridges - 1}.")
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"head {head} does not exist: the bridges have heads 0..{heads - 1} (None: average).")
    token = tokens - 1 if token is None else token
    if not 0 <= token < tokens:
        raise ValueError(f"token {token} is not a position of the prompt: use 0..{tokens - 1} (None: the last).")
    return token


def explorer_figure(
    analysis: Analysis, k: int = 5, bridge: int = 0, head: int | None = None, token: int | None = None
) -> go.Figure:
    """The explorer as one plotly figure: a heatmap trace per (bridge, head or average), only
    the chosen one visible; bridge and head dropdowns; a token slider driving the predictions table.

    It opens on ``bridge``, ``head`` (``None``: the head average) and the anchor row ``token``
    (``None``: the last one). Trace ``b * (H + 1) + 1 + h`` is bridge ``b``, head ``h``;
    ``b * (H + 1)`` its average.
    """
    row = _check_view(analysis, bridge, head, token)
    heads = analysis.attention[0].shape[0]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        specs=[[{"type": "heatmap"}, {"type": "table"}]])
    for b, weights in enumerate(analysis.attention):
        for h in [None, *range(heads)]:
            trace = _heatmap_trace(head_weights(weights, h), analysis.tokens, analysis.tokens, coloraxis="coloraxis",
                                   visible=b == bridge and h == head, name=f"bridge {b} {AVERAGE if h is None else h}")
            fig.add_trace(trace, row=1, col=1)
    tables = [_table_values(*predictions(analysis, t, k)) for t in range(len(analysis.tokens))]
    header = dict(values=["composed: next", "p", "anchor: next", "p"])
    fig.add_trace(go.Table(header=header, cells=dict(values=tables[row])), row=1, col=2)
    table = len(fig.data) - 1
    _token_axes(fig, analysis.tokens, analysis.tokens, row=1, col=1)
    menu = dict(type="dropdown", direction="down", showactive=True, yanchor="bottom", y=1.08)
    steps = [dict(method="update", label=f"{t}: {tok}",
                  args=[{"cells.values": [values]}, {"shapes[0].y0": t - 0.5, "shapes[0].y1": t + 0.5}, [table]])
             for t, (tok, values) in enumerate(zip(analysis.tokens, tables))]
    fig.update_layout(
        coloraxis=dict(colorscale=COLORSCALE, cmin=0, colorbar=dict(x=0.57, xanchor="left")),
        height=620, margin=dict(t=120),
        shapes=[_row_highlight(row)],
        updatemenus=[
            dict(menu, x=0.0, xanchor="left", active=bridge,
                 buttons=[dict(method="skip", label=bridge_label(b, s), args=[{}])
                          for b, s in enumerate(analysis.specs)]),
            dict(menu, x=0.56, xanchor="right", active=0 if head is None else head + 1,
                 buttons=[dict(method="skip", label=AVERAGE, args=[{}])]
                 + [dict(method="skip", label=f"head {h}", args=[{}]) for h in range(heads)]),
        ],
        sliders=[dict(active=row, steps=steps, currentvalue=dict(prefix="token "), pad=dict(t=60))],
        title=dict(text="what the anchor reads (rows: anchor tokens, columns: augmenting tokens)", y=0.98),
    )
    return fig


def explorer_html(
    model: ComposedModel,
    prompt: str | Sequence[int] | torch.Tensor,
    tokenizer=None,
    k: int = 5,
    path: str | os.PathLike | None = None,
    bridge: int = 0,
    head: int | None = None,
    token: int | None = None,
) -> str:
    """The explorer as one standalone HTML page (plotly.js embedded, works offline), opening on
    ``bridge``, ``head`` and anchor row ``token`` as :func:`explorer_figure` does.

    Returns:
        the HTML; also written atomically to ``path`` (``.html`` added if missing) when given.
    """
    analysis = analyse(model, prompt, tokenizer)
    fig = explorer_figure(analysis, k, bridge, head, token)
    script = _SELECT_SCRIPT % {"choices": analysis.attention[0].shape[0] + 1}
    text = fig.to_html(include_plotlyjs=True, full_html=True, post_script=script)
    if path is not None:
        path = Path(path)
        path = path if path.suffix.lower() in (".html", ".htm") else path.parent / f"{path.name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_html(text, path)
    return text
