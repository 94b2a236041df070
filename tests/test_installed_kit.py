"""The kit as learners on Colab meet it: the wheel, installed (not editable) in a clean virtual
environment, and every notebook run under nbval from an empty folder outside the repository, so no
``assets/`` or ``calm_mini/`` lies beside it.

The clean environment takes its dependencies from the environment running the tests through one
``.pth`` file of path lines (no second install, no network). A path line only adds a folder to
``sys.path``; the ``.pth`` files inside that folder, among them the editable install's finder, are
not processed, so ``import calm_mini`` finds the wheel (the second test proves it).

This is where CI runs the notebooks (pyproject's testpaths leave ``notebooks/`` out, so each runs
once); ``pytest notebooks/02_training.ipynb`` still runs one in the checkout by hand.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a notebook prints when it could not read a file of the kit and took another path instead.
FALLBACK = re.compile(r"not found|not available|no such file|no assets|skipped|raw\.githubusercontent", re.I)

# conftest.py of the learner's folder: records what each notebook cell printed or displayed as text.
RECORDER = '''
import json
from pathlib import Path


def pytest_collection_modifyitems(items):
    for item in items:  # nbval waits 5 s (fixed) for a finished cell's last outputs; a busy machine may need more
        item.output_timeout = 60


def pytest_runtest_teardown(item):
    outputs = getattr(item, "test_outputs", None) or []  # nbval keeps a cell's outputs there
    text = [out.get("text", "") + out.get("evalue", "") for out in outputs]
    text += [out.get("data", {}).get(kind, "") for out in outputs for kind in ("text/plain", "text/markdown")]
    with open(Path(__file__).with_name("outputs.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"notebook": item.path.name, "cell": item.name, "text": "\\n".join(text)}) + "\\n")
'''


@dataclass(frozen=True)
class Kit:
    wheel: Path
    env: Path  # the clean virtual environment
    python: Path  # its interpreter


def build_kit(work: Path) -> Kit:
    """Build the wheel from a copy of the sources (the checkout stays untouched), create a clean
    environment in ``work/env`` and install the wheel there, not editable and without dependencies."""
    source = work / "source"
    for name in ("calm_mini", "assets"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "figures"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", source],
                   check=True)
    (wheel,) = (work / "dist").glob("calm_mini-*.whl")
    env = work / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    python = env / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    site = Path(_run(python, "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    ours = dict.fromkeys(sysconfig.get_path(kind) for kind in ("purelib", "platlib"))
    (site / "calm_mini_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    _borrow_scripts(Path(sys.executable).parent, python)
    return Kit(wheel, env, python)


def _borrow_scripts(ours: Path, python: Path) -> None:
    """The dependencies' console scripts (``accelerate``, which notebook 05 launches), pointed at the
    clean environment's interpreter, as pip would have written them there."""
    for script in ours.iterdir():
        target = python.parent / script.name
        if not script.is_file() or script.is_symlink() or target.exists():
            continue
        first, _, rest = script.read_bytes().partition(b"\n")
        interpreter = Path(first.removeprefix(b"#!").decode(errors="replace"))
        if first.startswith(b"#!") and interpreter.parent == ours and interpreter.name.startswith("python"):
            target.write_bytes(f"#!{python}\n".encode() + rest)
            target.chmod(0o755)


def _run(python: Path, code: str, cwd: Path | None = None) -> str:
    return subprocess.run([python, "-c", code], cwd=cwd, check=True, capture_output=True, text=True).stdout


def run_notebooks(kit: Kit, notebooks: list[Path], folder: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Copy ``notebooks`` into the empty ``folder`` and run them there with nbval in the clean
    environment, classroom setting; returns the run and what every cell printed."""
    folder.mkdir()
    for notebook in notebooks:
        shutil.copy(notebook, folder / notebook.name)
    (folder / "conftest.py").write_text(RECORDER)
    env = {**os.environ, "CALM_MINI_SETTING": "classroom"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([kit.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-current-env", "--durations=0", *(n.name for n in notebooks)],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
    outputs_file = folder / "outputs.jsonl"
    outputs = [json.loads(line) for line in outputs_file.read_text().splitlines()] if outputs_file.exists() else []
    return result, outputs


def fallbacks(outputs: list[dict]) -> list[str]:
    """The cells whose outputs say that a file was missing and the notebook did something else."""
    return [f"{o['cell']}: {m.group(0)!r} in {o['text'][:300]!r}" for o in outputs
            if (m := FALLBACK.search(o["text"]))]


@pytest.fixture(scope="module")
def kit():
    # Not tmp_path_factory: pytest sessions running meanwhile (a developer's, or the notebooks' own) keep
    # only the last three of its folders and would delete this one under the running notebooks.
    with tempfile.TemporaryDirectory(prefix="calm_mini_kit_") as work:
        yield build_kit(Path(work))


def test_the_wheel_is_small_and_holds_every_package_and_the_shipped_assets(kit):
    from calm_mini.viz.notebook import SHIPPED_ASSETS

    names = zipfile.ZipFile(kit.wheel).namelist()
    packages = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "calm_mini").rglob("__init__.py")}
    assert packages == folders | {"calm_mini.assets"}, "list the new package in pyproject.toml's [tool.setuptools]"
    shipped = {Path(n).name for n in names if n.startswith("calm_mini/assets/") and not n.endswith("__init__.py")}
    assert shipped == {p.name for p in (ROOT / "assets").iterdir() if p.name.endswith(SHIPPED_ASSETS)}
    assert kit.wheel.stat().st_size < 1_000_000, f"the wheel is {kit.wheel.stat().st_size:,} bytes"


def test_the_clean_environment_imports_the_wheel_not_the_checkout(kit, tmp_path):
    code = ("import calm_mini, importlib.resources as r; from calm_mini.viz.notebook import read_asset; "
            "print(calm_mini.__file__); print(r.files('calm_mini.assets')); print(read_asset('kv_ablations.json'))")
    module, assets, ablations = _run(kit.python, code, cwd=tmp_path).split("\n", 2)
    for path in (Path(module), Path(assets)):
        assert path.is_relative_to(kit.env) and not path.is_relative_to(ROOT), path
    assert json.loads(ablations) == json.loads((ROOT / "assets" / "kv_ablations.json").read_text())


def test_every_notebook_runs_top_to_bottom_outside_the_repository(kit):
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    folder = kit.env.parent / "learner"
    assert not folder.is_relative_to(ROOT)
    result, outputs = run_notebooks(kit, notebooks, folder)
    errors = [line for line in result.stdout.splitlines() if re.search(r"Cell \d+: |Error\b", line)]
    assert result.returncode == 0, "\n".join(errors[:80]) + result.stdout[-3000:] + result.stderr[-2000:]
    assert {o["notebook"] for o in outputs} == {n.name for n in notebooks}
    assert not fallbacks(outputs), "\n".join(fallbacks(outputs))
    seconds = notebook_seconds(result.stdout)  # a learner's wait per notebook: kept for the record, not asserted
    (ROOT / "runs").mkdir(exist_ok=True)
    (ROOT / "runs" / "notebook_seconds.json").write_text(json.dumps(seconds, indent=2) + "\n")


def notebook_seconds(pytest_output: str) -> dict[str, float]:
    """Seconds per notebook, summed from pytest's ``--durations=0`` lines (``12.3s call  nb.ipynb::Cell 4``)."""
    seconds: dict[str, float] = {}
    for value, notebook in re.findall(r"^([\d.]+)s \w+ +([\w.-]+\.ipynb)::", pytest_output, re.M):
        seconds[notebook] = round(seconds.get(notebook, 0.0) + float(value), 1)
    return seconds
