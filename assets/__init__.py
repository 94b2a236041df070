"""The kit's committed results (JSON written by its commands) and figures. pyproject.toml installs
this folder as the package ``calm_mini.assets``, so notebooks read the same files in a checkout and
from the wheel: ``calm_mini.viz.notebook.read_asset("kv_ablations.json")``."""
