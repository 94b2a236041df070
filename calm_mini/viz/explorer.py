"""The attention explorer widget for notebooks; the only module of the kit that imports ipywidgets."""

from __future__ import annotations

import html
import json

import ipywidgets as widgets
import plotly.graph_objects as go

from ..core import ComposedModel
from .analysis import AVERAGE, Analysis, View, analyse, as_codec, explore, predictions_html
from .figures import bridge_label

class AttentionExplorer(widgets.VBox):
    """Prompt box, bridge / head / token selectors, the heatmap, and the composed model's and
    the anchor's top-k next tokens at the selected token. Display it as the last line of a cell.

    The figure is drawn into an ``ipywidgets.Output`` as the mime bundle of plotly's default
    renderer (call :func:`calm_mini.viz.set_renderer` first); JupyterLab draws it with the jupyterlab-plotly
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
                                     options=[(AVERAGE, AVERAGE)] + [(f"head {h}", h) for h in range(model.calm_config.num_heads)])
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
