"""The attention explorer widget for notebooks; the only module of the kit that imports ipywidgets."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from ..core import ComposedModel
from .analysis import AVERAGE, Analysis, View, analyse, as_codec, explore, predictions_html
from .figures import bridge_label

# A selector's description ("bridge", "head", ...) takes the width it needs, not a fixed 80px.
LABEL = {"description_width": "initial"}


def fit_width(dropdown: widgets.Dropdown) -> None:
    """Make ``dropdown`` wide enough for its description and its longest option, which
    ipywidgets' fixed default width would cut ('bridge 0: augmenting 0 layer 1 → anchor lay').
    ``ch`` is the width of a digit, wider than most letters of the front ends' sans-serif fonts;
    the 6ch more hold the arrow, the padding and the gap after the description."""
    labels = [option[0] if isinstance(option, tuple) else str(option) for option in dropdown.options]
    longest = max(map(len, labels), default=0)
    dropdown.layout.width = f"{longest + len(dropdown.description) + 6}ch"


class AttentionExplorer(widgets.VBox):
    """Prompt box, bridge / head / token selectors, the heatmap, and the composed model's and
    the anchor's top-k next tokens at the selected token. Display it as the last line of a cell.

    The heatmap is a ``plotly.graph_objects.FigureWidget`` (plotly 6+ builds it on ``anywidget``,
    whose JavaScript ships in the plotly and anywidget wheels: no internet), redrawn in place.
    An earlier version drew a plotly mime bundle into an ``ipywidgets.Output``, which VS Code's
    notebook renderer is known not to draw (vscode-jupyter #5871, vscode-notebook-renderers #70);
    anywidget lists VS Code and Colab among the front ends it supports. Verified where:
    JupyterLab 4 by ``tests/test_jupyterlab.py`` (a real server and Chromium: the figure draws and
    follows the controls, no selector cuts its label); VS Code and Colab not verified here (no
    VS Code or Colab on the test machines). ``self.figure`` and ``self.view`` hold what is shown;
    ``self.plot`` is the widget.
    """

    def __init__(self, model: ComposedModel, tokenizer=None, prompt: str = "", k: int = 5):
        self.model, self.codec, self.k = model, as_codec(tokenizer), k
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   style=LABEL, layout=widgets.Layout(width="60%", min_width="20em"))
        self.bridge = widgets.Dropdown(description="bridge", style=LABEL,
                                       options=[(bridge_label(b, s), b) for b, s in enumerate(model.specs)])
        self.head = widgets.Dropdown(description="head", style=LABEL,
                                     options=[(AVERAGE, AVERAGE)] + [(f"head {h}", h) for h in range(model.calm_config.num_heads)])
        self.token = widgets.Dropdown(description="token", style=LABEL)
        for selector in (self.bridge, self.head):
            fit_width(selector)
        self.plot, self.predictions, self.message = go.FigureWidget(), widgets.HTML(), widgets.HTML()
        self.predictions.layout = widgets.Layout(margin="0 0 0 1em")

        def row(*children):  # wraps onto the next line in a narrow window instead of squeezing
            return widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))

        super().__init__([self.prompt, row(self.bridge, self.head, self.token), row(self.plot, self.predictions),
                          self.message])
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
        fit_width(self.token)
        self._quiet = False
        self._render()

    def _render(self) -> None:
        if self._quiet or self.analysis is None:
            return
        head = None if self.head.value == AVERAGE else self.head.value
        self.view = explore(self.analysis, self.bridge.value, head, self.token.value, self.k)
        # one FigureWidget, redrawn in place: the front end receives the new traces and layout
        figure = self.view.figure
        self.plot.data = ()
        self.plot.add_traces(figure.data)
        self.plot.layout = figure.layout
        self.predictions.value = predictions_html(self.view)
        self.message.value = ""
