"""The AttentionExplorer draws and reacts inside a real JupyterLab, driven by a real browser.

Starts ``jupyter lab`` from this environment (a free port, a random token, a temporary root and
temporary config/settings/workspace dirs, nothing fetched from the internet), writes a notebook
that composes two tiny random models and displays the explorer, runs it from the Run menu in
Debian's Chromium (Playwright; never ``playwright install``), then changes the bridge and the
prompt and checks that the plotly figure changes, that no selector cuts its label, and that the
page logged no console errors. Skipped when Chromium, Playwright or JupyterLab is missing, unless
CALM_MINI_REQUIRE_BROWSER=1 (CI) makes that a failure.
"""

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_viz_browser import CHROMIUM, CHROMIUM_ARGS, PROMPT
from test_viz_browser import _missing as _browser_missing

TESTS = Path(__file__).resolve().parent
NEW_PROMPT = "3 1 4 1 5"
TIMEOUT_MS = 60_000  # generous: two shared CPUs start the server, the kernel and torch

# What the notebook runs: the explorer fixture of test_viz_browser.py, as a student would type it.
CELLS = [
    f"""import sys
sys.path.insert(0, {str(TESTS)!r})  # conftest's tiny model pair
import torch
from calm_mini import Evenly, compose
from calm_mini.viz import AttentionExplorer
from conftest import make_pair, randomise_bridges
torch.set_num_threads(1)""",
    """anchor, augmenting = make_pair("llama<-gpt2")
torch.manual_seed(0)  # the bridges' initial weights: the same explorer on every run
model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
with torch.no_grad():  # tiny random models attend almost uniformly; sharpen so heads look different
    for bridge in model.bridges:
        bridge.query.weight.normal_(0, 3)""",
    f"""AttentionExplorer(model, tokenizer=lambda i: f"tok{{i}}", prompt={" ".join(map(str, PROMPT))!r})""",
]


try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the fixtures skip (or fail, in CI) before a test needs it
    PlaywrightTimeout = TimeoutError


def _missing() -> str | None:
    if importlib.util.find_spec("jupyterlab") is None:
        return "jupyterlab not installed (pip install jupyterlab)"
    return _browser_missing()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)  # polling a port that is not open yet; nothing to wait on instead
    raise RuntimeError(f"jupyter lab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token, root dir) of a JupyterLab server that is always stopped afterwards."""
    missing = _missing()
    if missing:
        if os.environ.get("CALM_MINI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CALM_MINI_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root, config, data, runtime = (tmp / name for name in ("root", "config", "data", "runtime"))
    for folder in (root, config / "labconfig", data, runtime):
        folder.mkdir(parents=True)
    # Offline: no news feed, no update check, no PyPI extension manager; the announcements
    # plugin off too, so no "get Jupyter news?" toast lies over the notebook. The debugger off:
    # its start-up debug_request, cut short when the page closes, logs "Could not restore the
    # debugger state: Canceled future ..." as a console error that has nothing to do with the kit.
    (config / "jupyter_lab_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "extension_manager": "readonly"}}))
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True,
                                "@jupyterlab/debugger-extension": True}}))
    # and never ask which kernel to start: the notebook says python3
    tracker = tmp / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"autoStartDefaultKernel": True}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(data),
           "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_PLATFORM_DIRS": "1"}
    log = tmp / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
               "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/api/status?token={token}", server, log)
        yield base, token, root
    finally:
        server.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


PLOT = ".jp-Notebook .js-plotly-plot"  # the one figure: the explorer's FigureWidget
# What the figure shows, from the plotly div's own data and layout: the first trace's weights,
# the title (which names the bridge) and the rows' token labels; null while it has no trace.
FIGURE = f"""() => {{ const gd = document.querySelector('{PLOT}');
    return gd && gd.data && gd.data.length && gd.layout.title
        ? JSON.stringify([gd.data[0].z, gd.layout.title.text, gd.layout.yaxis.ticktext]) : null; }}"""


def figure_data(page) -> str:
    return page.evaluate(FIGURE)


def wait_for_figure(page, old: str | None, title: str, rows: list[str]) -> str:
    """Wait until the figure differs from ``old`` (as :func:`figure_data` read it), its title
    starts with ``title`` and its rows are ``rows`` (a redraw passes through other states)."""
    page.wait_for_function(f"""([old, title, rows]) => {{ const now = ({FIGURE})();
        if (now === null || now === old) return false;
        const [, shownTitle, shownRows] = JSON.parse(now);
        return shownTitle.startsWith(title) && JSON.stringify(shownRows) === JSON.stringify(rows); }}""",
                           arg=[old, title, rows], timeout=TIMEOUT_MS)
    return figure_data(page)


# Every cell has run: each prompt shows a number, none is [ ] (not run) or [*] (running).
ALL_RAN = r"() => [...document.querySelectorAll('.jp-InputPrompt')].every(p => /\[\d+\]/.test(p.innerText))"


def run_all_cells(page, tries: int = 3) -> None:
    """Run ▸ Run All Cells, until every cell has run. On two shared CPUs JupyterLab sometimes
    drops a run started while it is still wiring the notebook to its kernel: nothing runs, or
    the first cell runs and the others fall back to "[ ]". Then run all again (the notebook
    can run twice)."""
    for attempt in range(tries):
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function(ALL_RAN, timeout=45_000)
            break
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
    assert not page.locator(".jp-Dialog").count(), page.locator(".jp-Dialog").inner_text()


# Each selector's description and chosen option, and whether they fit: the <label> by its scroll
# width; the <select> (whose scrollWidth ignores its text) by measuring the chosen option's text
# in the select's own font against the room inside its padding (the right padding holds the arrow).
CLIPPED_LABELS = """() => [...document.querySelectorAll('.widget-dropdown')].map(box => {
    const label = box.querySelector('label'), select = box.querySelector('select');
    const style = getComputedStyle(select), context = document.createElement('canvas').getContext('2d');
    context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const text = select.options[select.selectedIndex].text.replaceAll('\\u00a0', ' ');  // ipywidgets writes spaces as nbsp
    const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return {description: label.textContent, text, room, needed: context.measureText(text).width,
            labelFits: label.scrollWidth <= label.clientWidth};
})"""


def test_explorer_in_jupyterlab(lab, browser):
    base, token, root = lab
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(notebook, root / "explorer.ipynb")
    # Start its kernel first (as a notebook reopened in a running Lab has one): JupyterLab then
    # attaches to it instead of racing its own start, which sometimes asks "Select Kernel".
    request = urllib.request.Request(
        f"{base}/api/sessions", method="POST", headers={"Authorization": f"token {token}"},
        data=json.dumps({"path": "explorer.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=TIMEOUT_MS)
        # the kernel is up when the toolbar's status says idle
        page.wait_for_selector(".jp-NotebookPanel-toolbar [data-status='idle'], "
                               ".jp-Toolbar-kernelStatus[data-status='idle']", timeout=TIMEOUT_MS)

        run_all_cells(page)
        page.wait_for_selector(f"{PLOT} .main-svg", timeout=TIMEOUT_MS)
        tokens = [f"tok{i}" for i in PROMPT]
        first = wait_for_figure(page, None, "bridge 0:", tokens)

        bridge = page.locator(".widget-dropdown", has=page.locator("label", has_text="bridge")).locator("select")
        assert bridge.locator("option").count() == 2
        bridge.select_option(index=1)
        second = wait_for_figure(page, first, "bridge 1:", tokens)
        assert json.loads(second)[0] != json.loads(first)[0], "another bridge, other attention weights"

        prompt = page.locator(".widget-text", has=page.locator("label", has_text="prompt")).locator("input")
        prompt.fill(NEW_PROMPT)
        prompt.press("Enter")  # continuous_update=False: the value is sent on Enter
        wait_for_figure(page, second, "bridge 1:", [f"tok{i}" for i in NEW_PROMPT.split()])
        page.wait_for_function("(n) => document.querySelector('.widget-dropdown select') && "
                               "[...document.querySelectorAll('.widget-dropdown select')].at(-1).options.length === n",
                               arg=len(NEW_PROMPT.split()))

        selectors = page.evaluate(CLIPPED_LABELS)
        assert [s["description"] for s in selectors] == ["bridge", "head", "token"]
        assert "→ anchor layer" in selectors[0]["text"]
        clipped = [s for s in selectors if not s["labelFits"] or s["needed"] > s["room"]]
        assert not clipped, f"selectors cut their labels: {clipped}"
        table = page.locator(".widget-html table").first
        assert table.locator("tr").count() == 1 + 5
        print(json.dumps(selectors))  # shown with -s: how much room each label has
    except Exception:
        page.screenshot(path=str(root / "failure.png"))
        print(f"JupyterLab at the failure: {root / 'failure.png'}")  # pytest shows a failing test's output
        raise
    finally:
        page.close()
    assert not errors, errors
