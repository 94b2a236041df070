"""The layout's rules, read off the source: dependencies point one way (experiments → training →
core; viz → core; nothing in core imports the rest of calm_mini), there are no import cycles
between modules, and only the explorer imports ipywidgets. Old module paths still import."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calm_mini"
# A module of the first group must not import one of the second.
FORBIDDEN = {
    "calm_mini.core": ("calm_mini",),  # only itself: checked with the exception below
    "calm_mini.training": ("calm_mini.experiments", "calm_mini.viz", "calm_mini.evaluation", "calm_mini.cli"),
    "calm_mini.models": ("calm_mini.experiments", "calm_mini.viz", "calm_mini.training", "calm_mini.cli"),
    "calm_mini.crosstok": ("calm_mini.experiments", "calm_mini.viz", "calm_mini.training", "calm_mini.cli"),
    "calm_mini.viz": ("calm_mini.experiments", "calm_mini.training", "calm_mini.cli"),
    "calm_mini.evaluation": ("calm_mini.experiments", "calm_mini.viz", "calm_mini.cli"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The calm_mini modules ``path`` imports, resolved to absolute names (anywhere in the file)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("calm_mini")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("calm_mini"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).exists()
                          or (PACKAGE.parent / (f"{target}.{a.name}".replace(".", "/") + ".py")).exists()}
    return found


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_walk_finds_the_layout():
    assert {"calm_mini.core.composed", "calm_mini.training.loop", "calm_mini.experiments.kv.run"} <= set(MODULES)
    assert "calm_mini.core.bridge" in MODULES["calm_mini.core.composed"], "relative imports are resolved"


@pytest.mark.parametrize("group", sorted(FORBIDDEN))
def test_dependencies_point_one_way(group):
    bad = {}
    for name, targets in MODULES.items():
        if not within(name, group):
            continue
        if group == "calm_mini.core":
            wrong = {t for t in targets if not within(t, "calm_mini.core")}
        else:
            wrong = {t for t in targets if any(within(t, f) for f in FORBIDDEN[group])}
        if wrong:
            bad[name] = sorted(wrong)
    assert not bad, f"imports against the layout: {bad}"


def test_no_import_cycles():
    """Between modules (a package's __init__ re-exporting its own modules is not a cycle)."""
    graph = {name: {t for t in targets if t in MODULES and not within(name, t)} for name, targets in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_only_the_explorer_imports_ipywidgets():
    users = [p.name for p in PACKAGE.rglob("*.py") if "ipywidgets" in p.read_text() and "import ipywidgets" in p.read_text()]
    assert users == ["explorer.py"], users
    done = subprocess.run([sys.executable, "-c", "import sys; import calm_mini, calm_mini.experiments.kv, calm_mini.viz; "
                           "print('ipywidgets' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


@pytest.mark.parametrize("old, name", [("calm_mini.compose", "compose"), ("calm_mini.train", "TrainConfig"),
                                       ("calm_mini.experiment", "ExperimentConfig"), ("calm_mini.data.chars", "char_tokenizer"),
                                       ("calm_mini.layers", "LayerMap"), ("calm_mini.catalogue", "CARDS")])
def test_old_module_paths_still_import_and_name_the_new_place(old, name):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert getattr(module, name) is not None
    assert any("moved to calm_mini." in str(w.message) for w in caught)
    with pytest.raises(AttributeError, match="moved to calm_mini"):
        getattr(module, "no_such_name")
