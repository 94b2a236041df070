"""Figures carry the captured data, files work offline, the renderer choice follows the
environment, and the explorer's logic and widget react to their selectors."""

import re

import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from calm_mini import Evenly, compose, viz
from calm_mini.models import tiny
from conftest import VOCAB, make_pair, randomise_bridges

PROMPT = [5, 17, 42, 5, 9, 10]  # token 5 twice: repeated tokens must stay separate rows/columns
TOKENS = [str(i) for i in PROMPT]


@pytest.fixture(scope="module")
def model():
    anchor, augmenting = make_pair("llama<-gpt2")
    return randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))


@pytest.fixture(scope="module")
def record(model):
    with model.capture_attention() as record, torch.no_grad():
        model(torch.tensor([PROMPT, PROMPT[::-1]]))
    return record


@pytest.fixture(scope="module")
def analysis(model):
    return viz.analyse(model, " ".join(TOKENS))


def z(trace) -> torch.Tensor:
    return torch.tensor(trace.z, dtype=torch.float32)


# ---------------------------------------------------------------- heatmap and grid
@pytest.mark.parametrize("head", [None, 0, 3])
def test_heatmap_shows_the_captured_weights(record, head):
    weights = record[1][0]  # (H, T, S)
    fig = viz.attention_heatmap(weights, TOKENS, head=head)
    (trace,) = fig.data
    expected = weights.mean(0) if head is None else weights[head]
    torch.testing.assert_close(z(trace), expected.float())
    assert list(fig.layout.yaxis.ticktext) == TOKENS and list(fig.layout.xaxis.ticktext) == TOKENS
    assert len(set(fig.layout.yaxis.tickvals)) == len(TOKENS), "repeated tokens must keep their own row"
    assert "'42'" in trace.text[2][2] and "%{z" in trace.hovertemplate


def test_heatmap_highlight_frames_the_row(record):
    fig = viz.attention_heatmap(record[0][0], TOKENS, highlight=3)
    (shape,) = fig.layout.shapes
    assert (shape.y0, shape.y1) == (2.5, 3.5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda w: viz.attention_heatmap(w, TOKENS, head=4), "head 4 does not exist"),
        (lambda w: viz.attention_heatmap(w, TOKENS[:-1]), "one label per position"),
        (lambda w: viz.attention_heatmap(w[None], TOKENS), "record\\[b\\]\\[0\\]"),
        (lambda w: viz.attention_heatmap(w.mean(0), TOKENS, head=0), "no head axis"),
        (lambda w: viz.attention_heatmap(w, TOKENS, highlight=6), "not an anchor position"),
    ],
)
def test_heatmap_rejects_bad_input(record, call, message):
    with pytest.raises(ValueError, match=message):
        call(record[0][0])


def test_grid_has_every_bridge_and_head(model, record):
    fig = viz.attention_grid(record, TOKENS[::-1], batch_index=1)
    heads = model.calm_config.num_heads
    assert len(fig.data) == len(model.specs) * heads
    for b in record.bridges():
        for h in range(heads):
            torch.testing.assert_close(z(fig.data[b * heads + h]), record[b][1, h].float())
    assert fig.layout.annotations[heads + 1].text == "bridge 1 · head 1"
    with pytest.raises(ValueError, match="batch_index=2"):
        viz.attention_grid(record, TOKENS, batch_index=2)


# ---------------------------------------------------------------- layer map and curves
def test_layer_map_shows_every_bridge_with_widths_and_parameters():
    anchor = tiny("llama", hidden_size=64, num_layers=6, vocab_size=VOCAB, seed=1)
    first = tiny("gpt2", hidden_size=32, num_layers=2, vocab_size=VOCAB, seed=2)
    second = tiny("gpt_neox", hidden_size=48, num_layers=4, vocab_size=VOCAB, seed=3)
    model = compose(anchor, [first, second], layers=[Evenly(2), Evenly(3)])
    fig = viz.layer_map_figure(model)
    bridges = [t for t in fig.data if t.name.startswith("bridge")]
    assert [t.name for t in bridges] == [f"bridge {b}" for b in range(len(model.specs))]
    for trace, spec, bridge in zip(bridges, model.specs, model.bridges):
        assert trace.meta["augmenting"] == spec.augmenting and trace.meta["anchor_layer"] == spec.anchor_layer
        assert trace.meta["parameters"] == sum(p.numel() for p in bridge.parameters())
        assert trace.x[0] != trace.x[1]
    text = " ".join(a.text for a in fig.layout.annotations) + fig.layout.title.text
    assert "D_B=64" in text and "D_A=32" in text and "D_A=48" in text
    assert f"{model.num_bridge_parameters():,}" in text


def test_training_curves_plot_the_logged_points():
    log = [{"step": 10, "loss": 1.2}, {"step": 20, "loss": 0.9, "acc/kv_math": 0.5, "acc/kv_subs": 0.7},
           {"step": 30, "loss": 0.5, "eval_loss": 0.8, "acc/kv_math": 0.75, "split": "train"}]
    fig = viz.training_curves(log)
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"loss", "eval_loss", "acc/kv_math", "acc/kv_subs"}
    assert list(traces["loss"].x) == [10, 20, 30] and list(traces["loss"].y) == [1.2, 0.9, 0.5]
    assert list(traces["acc/kv_math"].x) == [20, 30] and list(traces["acc/kv_math"].y) == [0.5, 0.75]
    assert traces["loss"].yaxis != traces["acc/kv_math"].yaxis
    assert fig.layout.yaxis2.title.text == "accuracy"
    with pytest.raises(ValueError, match="entry 1"):
        viz.training_curves([{"step": 1, "loss": 1.0}, {"loss": 2.0}])


# ---------------------------------------------------------------- files and renderers
def test_saved_html_embeds_plotly_js(tmp_path, record):
    fig = viz.attention_heatmap(record[0][0], TOKENS)
    written = viz.save_figure(fig, tmp_path / "sub" / "heatmap.html")
    html = written[0].read_text()
    assert written[0] == tmp_path / "sub" / "heatmap.html"
    assert not re.search(r"<script[^>]+src=", html), "plotly.js must be inline, not fetched (e.g. from cdn.plot.ly)"
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js itself is inside
    assert all(p.suffix in (".html", ".png") for p in written)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [p.name for p in written]  # no temporary files left


@pytest.mark.parametrize(
    "env, modules, shell, environment, renderer",
    [
        ({}, {"google.colab"}, "Shell", "colab", "colab"),
        ({"COLAB_RELEASE_TAG": "r"}, set(), "Shell", "colab", "colab"),
        ({"VSCODE_PID": "1"}, set(), "ZMQInteractiveShell", "vscode", "vscode"),
        ({}, set(), "ZMQInteractiveShell", "jupyter", "plotly_mimetype+notebook"),
        ({"CI": "true"}, set(), "ZMQInteractiveShell", "ci", "json"),
        ({"GITHUB_ACTIONS": "true"}, set(), None, "ci", "json"),
        ({"VSCODE_PID": "1"}, set(), None, "python", "json"),
        ({}, set(), "TerminalInteractiveShell", "python", "json"),
    ],
)
def test_renderer_follows_the_environment(env, modules, shell, environment, renderer):
    assert viz.environment_of(env, modules, shell) == environment
    assert viz.renderer_for(environment, env) == renderer
    assert "connected" not in renderer and "browser" not in renderer


def test_set_renderer_honours_plotly_renderer(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    monkeypatch.setenv("PLOTLY_RENDERER", "svg")
    assert viz.set_renderer() == "svg" == pio.renderers.default
    assert viz.set_renderer("json") == "json"


def test_notebook_setup_finds_the_folders_and_refuses_a_bad_setting(tmp_path, monkeypatch):
    from calm_mini.viz.notebook import setup

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    monkeypatch.delenv("CALM_MINI_SETTING", raising=False)
    threads = torch.get_num_threads()
    (tmp_path / "calm_mini").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "elsewhere").mkdir()
    try:
        monkeypatch.chdir(tmp_path / "notebooks")  # a notebook inside a checkout
        nb = setup()
        assert (nb.setting, nb.device) == ("classroom", "cpu")
        assert (nb.assets, nb.runs, nb.figures) == (tmp_path / "assets", tmp_path / "runs", tmp_path / "runs" / "figures")
        monkeypatch.chdir(tmp_path / "elsewhere")  # e.g. Colab: no checkout, so no assets
        assert setup().assets is None
        with pytest.raises(ValueError, match="CALM_MINI_SETTING"):
            setup("large")
    finally:
        torch.set_num_threads(threads)


def test_saved_figures_name_the_setting_the_seed_and_the_version(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    from calm_mini import __version__
    from calm_mini.viz.notebook import setup

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        nb = setup("classroom", seed=3)
    finally:
        torch.set_num_threads(threads)
    fig = go.Figure(go.Bar(y=[1, 2]), layout_title_text="accuracy")
    (html,) = nb.save(fig, "signed")
    caption = f"classroom, seed 3, calm_mini {__version__}"
    assert fig.layout.title.text == f"accuracy<br><sub>{caption}</sub>"  # the figure shown is the one saved
    assert caption in (nb.figures / html).read_text()


def test_read_asset_reads_the_one_copy_in_assets_and_names_what_ships(tmp_path, monkeypatch):
    """From a checkout (editable install) read_asset reads assets/ itself, from any folder; the
    installed wheel is tests/test_installed_kit.py's."""
    import tomllib
    from pathlib import Path

    from calm_mini.viz.notebook import SHIPPED_ASSETS, read_asset

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    assert read_asset("kv_ablations.json") == (root / "assets" / "kv_ablations.json").read_text(encoding="utf-8")
    assert read_asset("calm.svg").lstrip().startswith(("<svg", "<?xml"))
    for name in ("no_such_results.json", "explorer_screenshot.png"):  # the PNG is in assets/ but not shipped
        with pytest.raises(FileNotFoundError, match=r"ships no asset .*kv_ablations\.json"):
            read_asset(name)
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert package_data["calm_mini.assets"] == [f"*{suffix}" for suffix in SHIPPED_ASSETS]


# ---------------------------------------------------------------- explorer logic
def test_analysis_matches_the_models(model, analysis):
    ids = torch.tensor([PROMPT])
    with model.capture_attention() as record, torch.no_grad():
        composed = model(ids).logits[0]
    assert analysis.tokens == TOKENS
    torch.testing.assert_close(analysis.attention[1], record[1][0])
    torch.testing.assert_close(analysis.composed_logits, composed)
    torch.testing.assert_close(analysis.anchor_logits, model.anchor(ids).logits[0].detach())
    assert not torch.allclose(analysis.composed_logits, analysis.anchor_logits)


def test_top_predictions_are_sorted_probabilities(analysis):
    top = viz.top_predictions(analysis.composed_logits, 2, k=4)
    probs = analysis.composed_logits[2].softmax(-1)
    assert [i for i, _ in top] == probs.topk(4).indices.tolist()
    assert [p for _, p in top] == pytest.approx(probs.topk(4).values.tolist())
    with pytest.raises(ValueError, match="position 6"):
        viz.top_predictions(analysis.composed_logits, 6)


def test_explore_selects_bridge_head_and_token(analysis):
    view = viz.explore(analysis, bridge=1, head=2, token=3, k=3)
    torch.testing.assert_close(z(view.figure.data[0]), analysis.attention[1][2])
    assert view.figure.layout.shapes[0].y0 == 2.5
    assert len(view.composed) == len(view.anchor) == 3
    assert view.composed[0][0] == str(analysis.composed_logits[3].argmax().item())
    assert viz.explore(analysis, 0).figure.layout.shapes[0].y0 == len(PROMPT) - 1.5  # default: last token
    with pytest.raises(ValueError, match="bridge 2 does not exist"):
        viz.explore(analysis, bridge=2)


def test_codec_from_tokenizer_function_or_nothing():
    assert viz.as_codec().encode("3, 4 5") == [3, 4, 5] and viz.as_codec().decode(7) == "7"
    words = viz.as_codec(lambda i: f" w{i}")
    assert words.decode(7) == "␣w7" and words.encode("1 2") == [1, 2]

    class Tokenizer:
        def encode(self, text):
            return [ord(c) % VOCAB for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    hf_like = viz.as_codec(Tokenizer())
    assert hf_like.encode("ab") == [97, 98] and hf_like.decode(32) == "␣"
    with pytest.raises(ValueError, match="token ids separated by spaces"):
        viz.as_codec().encode("hello")


def test_explorer_html_is_standalone(model, analysis, tmp_path):
    html = viz.explorer_html(model, PROMPT, path=tmp_path / "explorer")
    assert (tmp_path / "explorer.html").read_text() == html
    assert not re.search(r"<script[^>]+src=", html) and "plotly_buttonclicked" in html
    fig = viz.explorer_figure(analysis)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == len(model.specs) * (model.calm_config.num_heads + 1)
    assert [t.visible for t in heatmaps].count(True) == 1
    assert len(fig.layout.sliders[0].steps) == len(PROMPT)


# ---------------------------------------------------------------- the widget
def test_widget_selectors_update_the_figure(model, monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    explorer = viz.AttentionExplorer(model, prompt=" ".join(TOKENS), k=3)
    attention = explorer.analysis.attention
    torch.testing.assert_close(z(explorer.figure.data[0]), attention[0].mean(0))
    assert isinstance(explorer.plot, go.FigureWidget)  # drawn by anywidget: JupyterLab, VS Code, Colab
    torch.testing.assert_close(z(explorer.plot.data[0]), attention[0].mean(0))

    explorer.bridge.value = 1
    explorer.head.value = 2
    torch.testing.assert_close(z(explorer.figure.data[0]), attention[1][2])
    explorer.head.value = viz.AVERAGE
    torch.testing.assert_close(z(explorer.figure.data[0]), attention[1].mean(0))
    torch.testing.assert_close(z(explorer.plot.data[0]), attention[1].mean(0))
    assert explorer.plot.layout.title.text == explorer.figure.layout.title.text and len(explorer.plot.data) == 1
    explorer.token.value = 1
    assert explorer.figure.layout.shapes[0].y0 == 0.5
    assert explorer.view.composed[0][0] in explorer.predictions.value

    explorer.prompt.value = "7 8 9"
    assert list(explorer.figure.layout.yaxis.ticktext) == ["7", "8", "9"]
    assert explorer.token.value == 2
    explorer.prompt.value = "7 999"
    assert "outside 0..127" in explorer.message.value and explorer.analysis.tokens == ["7", "8", "9"]


def test_widget_labels_have_room(model, monkeypatch):
    """Each selector is at least as wide (in ch) as its description plus its longest option, and
    the predictions table keeps a token and its probability in separate padded cells."""
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    explorer = viz.AttentionExplorer(model, tokenizer=lambda i: f"a_long_token_{i}", prompt=" ".join(TOKENS), k=3)
    for selector in (explorer.bridge, explorer.head, explorer.token):
        longest = max(len(label) for label, _ in selector.options)
        width = re.fullmatch(r"(\d+)ch", selector.layout.width)
        assert width and int(width.group(1)) > longest + len(selector.description), (selector.description, width)
        assert selector.style.description_width == "initial"
    assert "→ anchor layer" in explorer.bridge.options[0][0]
    short = explorer.token.layout.width
    explorer.prompt.value = "7 8"  # fewer tokens: shorter labels, a narrower selector
    assert int(explorer.token.layout.width[:-2]) <= int(short[:-2])

    table = explorer.predictions.value
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == 1 + 3
    for row in rows:
        cells = re.findall(r"<t[hd] style=\"([^\"]*)\">(.*?)</t[hd]>", row)
        assert len(cells) == 4 and all("padding" in style for style, _ in cells)
        assert [style.split("text-align:")[1].split(";")[0] for style, _ in cells] == ["left", "right"] * 2
    numbers = [text for row in rows[1:] for _, text in re.findall(r"<td style=\"([^\"]*)\">(.*?)</td>", row)[1::2]]
    assert all(re.fullmatch(r"\d\.\d{3}", n) for n in numbers), numbers
