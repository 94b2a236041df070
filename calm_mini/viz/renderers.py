"""Where the figures are drawn: plotly's renderer for each environment, and figures saved as
standalone HTML (plotly.js embedded) that works offline.

Colab and VS Code ship their own plotly renderers; a Jupyter kernel gets the plotly mimetype
(drawn by the jupyterlab-plotly extension that comes with the plotly wheel) plus the "notebook"
HTML that embeds plotly.js for the classic notebook and nbconvert. CI and plain Python get JSON:
nothing is drawn and no browser opens. No renderer fetches plotly.js from a CDN.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Collection, Mapping

import plotly.graph_objects as go
import plotly.io as pio

from ..core.files import atomic_write

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
