"""The README's explorer screenshot: the head it shows is chosen by measurement, the exported
explorer opens on that view, and tools/explorer_screenshot.py writes the PNG and its JSON.

The command's test needs Chromium and Playwright like tests/test_viz_browser.py (skipped without
them unless CALM_MINI_REQUIRE_BROWSER=1); the others need neither.
"""

import json

import pytest
import torch

from calm_mini import Evenly, compose, viz
from calm_mini.viz.heads import own_token_head
from conftest import make_pair, randomise_bridges
from test_viz_browser import PROMPT, require_browser, screenshot_tool


def causal_rows(heads: int, length: int) -> torch.Tensor:
    """(H, T, T) attention, each row uniform over positions 0..t."""
    return torch.tril(torch.ones(length, length)).div(torch.arange(1, length + 1)[:, None]).repeat(heads, 1, 1)


def put(weights: torch.Tensor, head: int, row: int, column: int, weight: float) -> None:
    """Make ``row`` of ``head`` put ``weight`` on ``column`` and spread the rest over its other positions."""
    others = row  # positions 0..row except column
    weights[head, row, : row + 1] = (1 - weight) / others if others else 0.0
    weights[head, row, column] = weight


def test_own_token_head_picks_the_planted_head():
    torch.manual_seed(0)
    keys = [1, 3]  # [BOS] kaz + bol =
    attention = [causal_rows(4, 5) for _ in range(3)]
    for p in keys:
        put(attention[1], 2, p, p, 0.8)  # planted: bridge 1, head 2 reads each key's own state …
    put(attention[1], 2, 2, 1, 0.9)  # … and from '+' and '=' the key before
    put(attention[1], 2, 4, 3, 0.9)
    attention[2][2] = torch.eye(5)  # decoy: reads every token's own state (a steep recency slope), keys too
    put(attention[0], 3, 1, 1, 0.99)  # decoy: strongest single weight, but only on one key
    put(attention[0], 3, 3, 1, 0.99)  # … its second key reads the *first* key instead
    for t in range(1, 5):
        put(attention[2], 0, t, 0, 0.95)  # decoy: a sink on [BOS], the largest weight of every row
    put(attention[2], 1, 2, 2, 1.0)  # decoy: reads its own token at '+', which is no key

    choice = own_token_head(attention, keys)
    assert (choice.bridge, choice.head) == (1, 2)
    assert choice.positions == (1, 3)
    assert choice.weights == pytest.approx((0.8, 0.8))
    assert choice.elsewhere == pytest.approx((0.1 / 2 + 0.1 / 4) / 2)  # rows '+' and '=' on themselves
    assert choice.score == pytest.approx(0.8 - choice.elsewhere)


def test_own_token_head_rejects_what_it_cannot_measure():
    with pytest.raises(ValueError, match="same tokens"):
        own_token_head([torch.rand(2, 4, 6)], [1])  # augmenting slots are not tokens
    with pytest.raises(ValueError, match="at least one position"):
        own_token_head([torch.rand(2, 4, 4)], [])
    with pytest.raises(ValueError, match=r"0\.\.3"):
        own_token_head([torch.rand(2, 4, 4)], [4])


@pytest.fixture(scope="module")
def analysis():
    anchor, augmenting = make_pair("llama<-gpt2")
    torch.manual_seed(0)
    model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    return viz.analyse(model, PROMPT, tokenizer=lambda i: f"tok{i}")


def test_exported_explorer_opens_on_the_chosen_view(analysis):
    heads = analysis.attention[0].shape[0]
    fig = viz.explorer_figure(analysis, bridge=1, head=1, token=2)
    visible = [i for i, trace in enumerate(fig.data) if trace.type == "heatmap" and trace.visible]
    assert visible == [1 * (heads + 1) + 1 + 1]  # bridge 1, head 1: the trace the dropdown script shows
    assert [menu.active for menu in fig.layout.updatemenus] == [1, 2]  # the script's index comes from these
    assert fig.layout.sliders[0].active == 2
    assert fig.layout.shapes[0].y0 == 1.5
    composed, anchor = viz.predictions(analysis, 2)
    assert list(fig.data[-1].cells.values[0]) == [token for token, _ in composed]

    default = viz.explorer_figure(analysis)  # unchanged: bridge 0, head average, the last token
    assert [i for i, trace in enumerate(default.data) if trace.type == "heatmap" and trace.visible] == [0]
    assert default.layout.sliders[0].active == len(PROMPT) - 1
    assert list(default.data[-1].cells.values[0]) != list(fig.data[-1].cells.values[0])


@pytest.mark.parametrize("view, message", [(dict(bridge=2), "bridges 0..1"), (dict(head=9), "heads 0..3"),
                                           (dict(token=len(PROMPT)), "position of the prompt")])
def test_exported_explorer_rejects_a_view_it_does_not_have(analysis, view, message):
    with pytest.raises(ValueError, match=message):
        viz.explorer_figure(analysis, **view)


def test_screenshot_command_writes_png_and_json(tmp_path):
    require_browser()
    report = screenshot_tool.main(["--setting", "smoke", "--assets", str(tmp_path), "--cache-dir",
                                   str(tmp_path / "cache"), "--quiet"])
    png, data = tmp_path / "explorer_screenshot.png", tmp_path / "explorer_screenshot.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    written = json.loads(data.read_text())
    assert written == report
    assert {"command", "setting", "seeds", "config_hash", "calm_mini_version", "prompt", "tokens", "bridge", "head",
            "row", "weight_on_key", "weights_on_keys"} <= set(written)
    assert written["setting"] == "smoke" and written["command"].startswith("python tools/explorer_screenshot.py")
    key = written["row"]["token"]
    assert key in written["prompt"] and written["tokens"][written["row"]["position"]] == key
    assert written["weight_on_key"] == written["weights_on_keys"][key]
    assert len(written["weights_on_keys"]) == 2  # a prompt over two keys
