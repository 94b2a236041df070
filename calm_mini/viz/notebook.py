"""One call at the top of every notebook: where it runs, the plotly renderer, the setting
(classroom on a CPU, full on a GPU), the device, seeds and threads, and where figures go::

    from calm_mini.viz.notebook import read_asset, setup
    nb = setup()                 # CALM_MINI_SETTING=full picks the full setting
    nb.save(fig, "kv_table1")    # runs/figures/kv_table1.html (+ assets/kv_table1.json when updating assets)
    read_asset("kv_ablations.json")  # a result the kit ships, in a checkout and on Colab alike
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import plotly.graph_objects as go
import torch

from .renderers import detect_environment, save_figure, set_renderer

SETTINGS = ("classroom", "full")
SHIPPED_ASSETS = (".json", ".svg")  # the files of assets/ that the wheel carries: package-data in pyproject.toml


@dataclass(frozen=True)
class Notebook:
    """What :func:`setup` decided.

    setting: "classroom" (a CPU, minutes; what CI runs) or "full" (a GPU, larger settings).
    device: "cuda" for the full setting when a GPU is visible, else "cpu".
    environment: "colab", "vscode", "jupyter", "ci" or "python"; renderer: plotly's.
    figures: where :meth:`save` writes offline HTML (ignored by git), inside :attr:`runs`;
        assets: the repository's ``assets/``, where :meth:`save` may write (``None`` outside a
        checkout, e.g. on Colab); to read what the kit ships there, use :func:`read_asset`.
    seed: what :func:`setup` seeded torch with.
    """

    setting: str
    device: str
    environment: str
    renderer: str
    figures: Path
    assets: Path | None
    seed: int = 0

    def save(self, fig: go.Figure, name: str) -> list[str]:
        """Sign ``fig``'s title with the setting, the seed and the kit's version (in place: the
        figure shown is the one saved), then save it as ``figures/<name>.html`` (plotly.js inside,
        works offline); with ``CALM_MINI_UPDATE_ASSETS=1`` also its plotly JSON as
        ``assets/<name>.json``, to commit. Returns the names of the files written."""
        fig.update_layout(title_text=f"{fig.layout.title.text or ''}<br><sub>{self.caption}</sub>")
        written = save_figure(fig, self.figures / name, png=False)
        if os.environ.get("CALM_MINI_UPDATE_ASSETS") == "1" and self.assets is not None:
            written.append(self.assets / f"{name}.json")
            fig.write_json(written[-1])
        return [p.name for p in written]

    @property
    def caption(self) -> str:
        """``"classroom, seed 0, calm_mini 0.1.0"``: what every saved figure says it shows."""
        from .. import __version__

        return f"{self.setting}, seed {self.seed}, calm_mini {__version__}"

    @property
    def runs(self) -> Path:
        """Where a notebook writes what it makes besides figures (saved bridges, reports):
        ``runs/``, the parent of :attr:`figures`, which git ignores."""
        return self.figures.parent

    def __str__(self) -> str:
        from .. import __version__

        return (f"calm_mini {__version__} · setting: {self.setting} · device: {self.device} · "
                f"environment: {self.environment} · plotly renderer: {self.renderer}")


def read_asset(name: str) -> str:
    """The text of ``name`` (e.g. ``"kv_ablations.json"``, ``"calm.svg"``) from the results and
    figures the kit ships: the package ``calm_mini.assets``, which pyproject.toml maps onto the
    repository's ``assets/``. One copy: an editable install reads ``assets/`` itself, the wheel
    (pip, Colab) carries its ``SHIPPED_ASSETS`` files."""
    shipped = resources.files("calm_mini.assets")
    if not name.endswith(SHIPPED_ASSETS) or not shipped.joinpath(name).is_file():
        names = sorted(p.name for p in shipped.iterdir() if p.name.endswith(SHIPPED_ASSETS))
        raise FileNotFoundError(f"calm_mini ships no asset {name!r}; it ships {', '.join(names)}. A file in assets/ "
                                f"ships when its name ends with {' or '.join(SHIPPED_ASSETS)} (package-data in "
                                "pyproject.toml).")
    return shipped.joinpath(name).read_text(encoding="utf-8")


def setup(setting: str | None = None, seed: int = 0, threads: int | None = None) -> Notebook:
    """Set the renderer, seed torch, choose the setting and the device; print and return them.

    Args:
        setting: "classroom" or "full"; default ``$CALM_MINI_SETTING`` or "classroom".
        seed: for ``torch.manual_seed``.
        threads: torch threads on the CPU; default ``$CALM_MINI_THREADS`` or 1 (small models on
            a shared CPU run fastest on one thread).
    """
    setting = setting or os.environ.get("CALM_MINI_SETTING", "classroom")
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, not {setting!r} (CALM_MINI_SETTING).")
    device = "cuda" if setting == "full" and torch.cuda.is_available() else "cpu"
    if setting == "full" and device == "cpu":
        print("The full setting asks for a GPU but none is visible: running it on the CPU (slow).")
    if device == "cpu":
        torch.set_num_threads(threads or int(os.environ.get("CALM_MINI_THREADS", "1")))
    torch.manual_seed(seed)
    cwd = Path.cwd()
    root = cwd.parent if cwd.name == "notebooks" and (cwd.parent / "calm_mini").is_dir() else cwd
    assets = root / "assets" if (root / "calm_mini").is_dir() else None
    notebook = Notebook(setting, device, detect_environment(), set_renderer(), root / "runs" / "figures", assets, seed)
    print(notebook)
    return notebook
