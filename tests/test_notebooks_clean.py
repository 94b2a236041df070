"""The committed notebooks stay clean and follow the kit's notebook layout.

Clean: valid nbformat 4, no outputs, no execution counts, minimal metadata, no local paths.
Layout: first cell markdown with a Colab badge; second cell installs the kit on Colab and imports
the one setup call (``calm_mini.viz.notebook.setup``); a ``parameters`` cell that only chooses
SETTING; the next code cell calls ``setup(SETTING)``; exercises with hidden solutions.
Home: every link to the kit's repository (Colab badge, ``%pip install`` line, pictures) names
the one in pyproject.toml's ``[project.urls]``.
Fix a dirty notebook with ``python notebooks/clean.py`` (local paths you must remove by hand).
"""

import importlib.util
import re
import shutil
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIX = "run `python notebooks/clean.py` and commit the result"
# The kit's home, written once: pyproject.toml's [project.urls]
HOME = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
COLAB = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"
# A link into some GitHub repository: the page, its raw files, or Colab opening a notebook from it.
GITHUB_LINK = re.compile(r"https://(?:github\.com|raw\.githubusercontent\.com|colab\.research\.google\.com/github)"
                         r"/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[/\s\"'\\)\]]|$)")
# A local path: /root, /work, /tmp, /home (or a macOS/Windows home) not inside a URL or a longer path.
LOCAL_PATH = re.compile(r"(?<![\w.:/-])/(root|work|tmp|home|Users)(?=[/\"'\s\\]|$)|[A-Za-z]:\\\\?Users")
ALLOWED_CELL_METADATA = {"tags", "jupyter"}

pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks yet")


def read(path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# The parameters cell's one line of code (papermill-style).
PARAMETER = r'SETTING\s*=\s*os\.environ\.get\(\s*"CALM_MINI_SETTING"\s*,\s*"classroom"\s*\)\s*(#.*)?'


def code_lines(source):
    """The lines of ``source`` that are code: not blank, not only a comment."""
    return [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def path(request):
    return request.param


def test_notebooks_are_numbered():
    names = [p.name for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", n) for n in names), names


def test_valid_nbformat_4(path):
    nb = read(path)
    assert nb.nbformat == 4, f"{path.name} is nbformat {nb.nbformat}, not 4"
    nbformat.validate(nb)


def test_no_outputs_or_execution_counts(path):
    dirty = [i for i, c in enumerate(read(path).cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; {FIX}"


def test_minimal_metadata(path):
    nb = read(path)
    assert set(nb.metadata) == {"kernelspec"}, f"{path.name}: notebook metadata {sorted(nb.metadata)}; {FIX}"
    assert nb.metadata.kernelspec.name == "python3", f"{path.name}: kernelspec {nb.metadata.kernelspec}; {FIX}"
    extra = {i: sorted(set(c.metadata) - ALLOWED_CELL_METADATA) for i, c in enumerate(nb.cells)}
    assert not {i: keys for i, keys in extra.items() if keys}, f"{path.name}: stray cell metadata; {FIX}"


def test_no_local_paths(path):
    text = path.read_text(encoding="utf-8")
    found = sorted({m.group(0) for m in LOCAL_PATH.finditer(text)})
    assert not found, f"{path.name} contains local paths {found}: use paths relative to the notebook"


# Module paths of the flat layout before the reorganisation: they still import (with a warning,
# which pytest's filter hides), so only this test keeps a notebook from teaching them.
OLD_MODULES = re.compile(r"calm_mini\.(compose|train|evaluate|experiment|basemodels|facts|data|catalogue|layers|bridge|files)\b")


def test_notebooks_use_the_current_module_paths(path):
    old = sorted({m.group(0) for c in read(path).cells for m in OLD_MODULES.finditer(c.source)})
    assert not old, f"{path.name} uses old module paths {old}; see README's Layout for the new ones"


def test_nbval_markers_stand_alone(path):
    """nbval only sees a marker alone on its line: `# NBVAL_IGNORE_OUTPUT (why)` is silently ignored."""
    lines = [line.strip() for c in code_cells(read(path)) for line in c.source.splitlines() if "NBVAL_" in line]
    bad = [line for line in lines if not re.fullmatch(r"#\s*NBVAL_[A-Z_]+", line)]
    assert not bad, f"{path.name}: put the reason on the next line, not beside the marker: {bad}"


def test_first_cell_is_markdown_with_colab_badge(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown", f"{path.name}: the first cell must be markdown (title, what you learn, time)"
    assert first.source.lstrip().startswith("# "), f"{path.name}: the first cell starts with the title"
    assert "colab-badge.svg" in first.source, f"{path.name}: the first cell needs a Colab badge"
    for words in ("What you will learn", "Time:", "CPU", "GPU"):
        assert words in first.source, f"{path.name}: the first cell should say {words!r}"


def home_mismatches(path: Path, home: str = HOME) -> list[str]:
    """What in the notebook at ``path`` should name the kit's ``home`` repository but does not."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", home)
    assert match, f"pyproject.toml's Repository URL {home!r} is not https://github.com/OWNER/NAME"
    repo, nb = match.group(1), read(path)
    wrong = []
    badge = COLAB.format(repo=repo, name=path.name)
    if f"]({badge})" not in nb.cells[0].source:
        wrong.append(f"the first cell's Colab badge should link {badge}")
    installs = re.findall(r'%pip install .*"calm-mini @ git\+([^"]+)"', nb.cells[1].source)
    if installs != [home]:
        wrong.append(f'the second cell should %pip install "calm-mini @ git+{home}" once, not from {installs}')
    for cell in nb.cells:  # every other link into GitHub (e.g. notebook 00's picture) names the same repository
        wrong += [f"{m.group(0)} is not in {repo}" for m in GITHUB_LINK.finditer(cell.source) if m.group(1) != repo]
    return wrong


def test_notebooks_link_the_home_in_pyproject(path):
    wrong = home_mismatches(path)
    assert not wrong, f"{path.name} (home: {HOME}, from pyproject.toml's [project.urls]): " + "; ".join(wrong)


def test_home_check_catches_one_notebook_that_differs(tmp_path):
    source = NOTEBOOKS[0]
    assert not home_mismatches(source)
    text = source.read_text(encoding="utf-8")
    home = HOME.removeprefix("https://github.com/")
    other = home + "-fork"
    for old, new in ((f"git+{HOME}", f"git+https://github.com/{other}"),  # the install line
                     (f"colab.research.google.com/github/{home}/", f"colab.research.google.com/github/{other}/"),
                     (f"raw.githubusercontent.com/{home}/", f"raw.githubusercontent.com/{other}/")):  # 00's picture
        if old not in text:
            assert "raw.githubusercontent" in old, f"{source.name} has no {old}"
            continue
        copy = tmp_path / source.name
        copy.write_text(text.replace(old, new), encoding="utf-8")
        assert home_mismatches(copy), f"changing {old} to {new} went unnoticed"
    shutil.copyfile(source, tmp_path / source.name)
    assert home_mismatches(tmp_path / source.name, home="https://github.com/someone/else")


def test_second_cell_sets_up_the_environment(path):
    second = read(path).cells[1]
    assert second.cell_type == "code", f"{path.name}: the second cell is the setup cell"
    source = second.source
    assert "google.colab" in source and "pip install" in source, (
        f"{path.name}: the second (setup) cell should install the kit on Colab only "
        f"(`%pip install` under `if \"google.colab\" in sys.modules:`)"
    )
    assert re.search(r"^from calm_mini\.viz\.notebook import setup$", source, re.M), (
        f"{path.name}: the second (setup) cell should import the one setup call: from calm_mini.viz.notebook import setup"
    )


def test_parameters_cell(path):
    cells = read(path).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: tag exactly one cell 'parameters' (papermill-style), not {len(tagged)}"
    cell = cells[tagged[0]]
    assert cell.cell_type == "code", f"{path.name}: the parameters cell must be code"
    lines = code_lines(cell.source)
    assert len(lines) == 1 and re.fullmatch(PARAMETER, lines[0]), (
        f"{path.name}: the parameters cell only assigns SETTING = os.environ.get(\"CALM_MINI_SETTING\", \"classroom\") "
        f"(what depends on the setting goes in the next cell, after setup)"
    )
    assert '"full"' in cell.source, f"{path.name}: the parameters cell should say that \"full\" is the other setting"
    after = [c for c in cells[tagged[0] + 1:] if c.cell_type == "code"]
    first = code_lines(after[0].source)[:1] if after else []
    assert first and re.match(r"nb\s*=\s*setup\(SETTING\)", first[0]), (
        f"{path.name}: the first code cell after the parameters cell should start with nb = setup(SETTING)"
    )


def test_exercises_with_hidden_solutions(path):
    cells = read(path).cells
    starts = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "## Exercises" in c.source]
    assert starts, f"{path.name}: needs an '## Exercises' section"
    after = [c for c in cells[starts[-1]:] if c.cell_type == "code"]
    hidden = [c for c in after if c.metadata.get("jupyter", {}).get("source_hidden")]
    assert hidden, f"{path.name}: put the solutions in a code cell with metadata jupyter.source_hidden = true"


def test_assets_are_small():
    """Committed assets stay small; assets/figures/ (offline HTML from the commands) is gitignored."""
    files = [p for p in (ROOT / "assets").rglob("*") if p.is_file() and "figures" not in p.relative_to(ROOT).parts]
    big = {p.name: p.stat().st_size for p in files if p.stat().st_size >= 2**20}
    assert not big, f"assets over 1 MB {big}: keep offline HTML in runs/figures/ (gitignored), see notebooks/README.md"


def load_cleaner():
    spec = importlib.util.spec_from_file_location("clean", ROOT / "notebooks" / "clean.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clean_script_strips_a_dirty_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("print(1)", execution_count=3, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n")], metadata={"scrolled": True}),
        nbformat.v4.new_code_cell("# Solutions", metadata={"jupyter": {"source_hidden": True, "outputs_hidden": True},
                                                            "tags": ["parameters"], "vscode": {"x": 1}}),
    ])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3"}, "language_info": {"name": "python"},
                   "widgets": {"state": {}}}
    dirty = tmp_path / "00_dirty.ipynb"
    nbformat.write(nb, dirty)
    cleaner = load_cleaner()
    assert cleaner.main(["--check", str(dirty)]) == 1
    assert cleaner.main([str(dirty)]) == 0
    assert cleaner.main(["--check", str(dirty)]) == 0
    cleaned = read(dirty)
    assert set(cleaned.metadata) == {"kernelspec"}
    assert cleaned.cells[1].outputs == [] and cleaned.cells[1].execution_count is None
    assert cleaned.cells[1].metadata == {}
    assert cleaned.cells[2].metadata == {"jupyter": {"source_hidden": True}, "tags": ["parameters"]}
    assert [c.source for c in cleaned.cells] == ["# title", "print(1)", "# Solutions"]


def test_committed_notebooks_are_what_the_cleaner_writes(path):
    assert load_cleaner().cleaned_text(path) == path.read_text(encoding="utf-8"), f"{path.name}: {FIX}"
