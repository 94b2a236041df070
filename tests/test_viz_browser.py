"""The exported explorer draws in a real, offline browser and reacts to its controls.

Needs Debian's Chromium and Playwright for Python (`apt-get install -y chromium`,
`pip install playwright`; never `playwright install`). Skipped when either is missing, unless
CALM_MINI_REQUIRE_BROWSER=1 (CI) makes that a failure. The browser and its offline flags are those
of tools/explorer_screenshot.py, the one writer of assets/explorer_screenshot.png.
"""

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import torch

from calm_mini import Evenly, compose, viz
from conftest import make_pair, randomise_bridges

_spec = importlib.util.spec_from_file_location(
    "explorer_screenshot", Path(__file__).resolve().parents[1] / "tools" / "explorer_screenshot.py")
screenshot_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screenshot_tool)
CHROMIUM, CHROMIUM_ARGS = screenshot_tool.CHROMIUM, screenshot_tool.CHROMIUM_ARGS
_missing = screenshot_tool.missing_browser
PROMPT = [5, 17, 42, 5, 9, 10]


def require_browser() -> None:
    """Skip the calling test without Chromium or Playwright; fail instead under CALM_MINI_REQUIRE_BROWSER=1."""
    missing = _missing()
    if missing:
        if os.environ.get("CALM_MINI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CALM_MINI_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def page():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1200, "height": 700})
        browser.close()


@pytest.fixture(scope="module")
def explorer_file(tmp_path_factory):
    anchor, augmenting = make_pair("llama<-gpt2")
    torch.manual_seed(0)  # the bridges' initial weights: the same explorer on every run
    model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    with torch.no_grad():  # tiny random models attend almost uniformly; sharpen so heads look different
        for bridge in model.bridges:
            bridge.query.weight.normal_(0, 3)
    path = tmp_path_factory.mktemp("explorer") / "explorer.html"
    viz.explorer_html(model, PROMPT, tokenizer=lambda i: f"tok{i}", path=path)
    return path


def heatmap_image(page) -> str:
    """The data URL of the visible heatmap's raster image (plotly draws heatmaps as <image>)."""
    images = page.locator(".hm image")
    assert images.count() == 1, "exactly one heatmap is drawn"
    return images.first.get_attribute("href") or images.first.get_attribute("xlink:href")


def plot_state(page) -> dict:
    return page.evaluate("""() => { const gd = document.querySelector('.plotly-graph-div');
        return {visible: gd.data.map(t => t.visible), row: gd.layout.shapes[0].y0,
                table: gd.data[gd.data.length - 1].cells.values[0]}; }""")


def test_exported_explorer_draws_and_reacts(page, explorer_file, tmp_path):
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(explorer_file.as_uri())
    page.wait_for_selector(".main-svg .hm image", timeout=20_000)

    labels = page.locator(".main-svg .ytick text").all_text_contents()
    assert labels == [f"tok{i}" for i in PROMPT]
    before, state = heatmap_image(page), plot_state(page)
    assert before.startswith("data:image/png") and state["visible"].index(True) == 0
    assert state["row"] == len(PROMPT) - 1.5

    page.locator(".updatemenu-header-group").nth(1).click()  # the head dropdown
    page.locator(".updatemenu-dropdown-button", has_text=re.compile("^head 1$")).click()
    page.wait_for_function("() => document.querySelector('.plotly-graph-div').data[2].visible === true")
    assert heatmap_image(page) != before
    assert plot_state(page)["visible"].index(True) == 2  # bridge 0, head 1

    page.locator(".updatemenu-header-group").nth(0).click()  # the bridge dropdown
    page.locator(".updatemenu-dropdown-button", has_text=re.compile("^bridge 1:")).click()
    heads = len(state["visible"][:-1]) // 2
    page.wait_for_function(f"() => document.querySelector('.plotly-graph-div').data[{heads + 2}].visible === true")

    rail = page.locator(".slider-rail-touch-rect").bounding_box()
    page.mouse.click(rail["x"] + 2, rail["y"] + rail["height"] / 2)  # the slider's first step: token 0
    page.wait_for_function("() => document.querySelector('.plotly-graph-div').layout.shapes[0].y0 === -0.5")
    # the table is restyled in a separate step after the frame moves: wait for it to change
    old = json.dumps(state["table"])
    page.wait_for_function(f"() => JSON.stringify(document.querySelector('.plotly-graph-div').data.at(-1).cells.values[0]) !== {old!r}")
    assert plot_state(page)["table"] != state["table"]
    assert not errors

    shot = tmp_path / "explorer_screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_exported_explorer_opens_on_a_chosen_view(page, tmp_path):
    anchor, augmenting = make_pair("llama<-gpt2")
    torch.manual_seed(0)
    model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    path = tmp_path / "explorer.html"
    viz.explorer_html(model, PROMPT, tokenizer=lambda i: f"tok{i}", path=path, bridge=1, head=1, token=2)
    page.goto(path.as_uri())
    page.wait_for_selector(".main-svg .hm image", timeout=20_000)
    heads = model.calm_config.num_heads
    state = plot_state(page)
    assert state["visible"].index(True) == (heads + 1) + 2 and state["row"] == 1.5  # bridge 1, head 1, token 2

    page.locator(".updatemenu-header-group").nth(1).click()  # another head: the bridge stays the chosen one
    page.locator(".updatemenu-dropdown-button", has_text=re.compile("^head 0$")).click()
    page.wait_for_function(f"() => document.querySelector('.plotly-graph-div').data[{heads + 2}].visible === true")
    assert plot_state(page)["visible"].index(True) == (heads + 1) + 1


def test_saved_heatmap_draws_offline(page, tmp_path):
    tokens = ["the", "cat", "the", "dog"]
    weights = torch.rand(2, 4, 4)
    (html, *_) = viz.save_figure(viz.attention_heatmap(weights, tokens), tmp_path / "heatmap", png=False)
    page.goto(html.as_uri())
    page.wait_for_selector(".main-svg .hm image", timeout=20_000)
    assert page.locator(".main-svg .xtick text").all_text_contents() == tokens
