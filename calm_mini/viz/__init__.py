"""See what the anchor reads: plotly figures (:mod:`.figures`), where they are drawn and saved
(:mod:`.renderers`), the attention explorer (its logic :mod:`.analysis`, the notebook widget
:mod:`.explorer`, the offline page :mod:`.export`) and the one setup call of every notebook
(:mod:`.notebook`). Only the widget imports ipywidgets, on first use of ``AttentionExplorer``."""

from .analysis import AVERAGE, Analysis, Codec, View, analyse, as_codec, explore, predictions, predictions_html, top_predictions
from .export import explorer_figure, explorer_html
from .figures import (
    attention_grid,
    attention_heatmap,
    bridge_label,
    head_weights,
    layer_map_figure,
    results_chart,
    training_curves,
)
from .renderers import RENDERERS, detect_environment, environment_of, renderer_for, save_figure, set_renderer

__all__ = [
    "AVERAGE", "Analysis", "AttentionExplorer", "Codec", "RENDERERS", "View", "analyse", "as_codec",
    "attention_grid", "attention_heatmap", "bridge_label", "detect_environment", "environment_of", "explore",
    "explorer_figure", "explorer_html", "head_weights", "layer_map_figure", "predictions", "predictions_html",
    "renderer_for", "results_chart", "save_figure", "set_renderer", "top_predictions", "training_curves",
]


def __getattr__(name: str):
    if name == "AttentionExplorer":  # the widget needs ipywidgets: imported on first use only
        from .explorer import AttentionExplorer

        return AttentionExplorer
    raise AttributeError(f"module 'calm_mini.viz' has no attribute {name!r}")
