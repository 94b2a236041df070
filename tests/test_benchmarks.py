"""The benchmark scripts run (``--quick``) on an image with only torch and transformers, and write
the JSON their readers expect; the CPU memory counter counts what it claims to."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import summary  # noqa: E402

# Not on the GPU image: importing any of them must not be needed by the benchmarks' path.
ABSENT = ("datasets", "plotly", "ipywidgets", "gguf")
# Runs a script with the packages above made unimportable (sys.modules[name] = None).
RUNNER = """
import os, runpy, sys
for name in {absent!r}:
    sys.modules[name] = None
script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def run_quick(script: str, out: Path, *extra: str, expect: str = "on a GPU: ") -> dict:
    command = [sys.executable, "-c", RUNNER.format(absent=ABSENT), str(BENCHMARKS / script),
               "--quick", "--threads", "1", "--device", "cpu", "--json", str(out), *extra]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert expect in done.stdout
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("bench")
    return {
        "train_step": run_quick("train_step.py", folder / "train_step.json"),
        "decode": run_quick("decode.py", folder / "decode.json", "--dtype", "bf16"),
        "memory": run_quick("memory.py", folder / "memory.json", expect="training ÷ inference"),
        "folder": folder,
    }


def test_train_step_writes_its_ratio(results):
    r = results["train_step"]
    assert r["benchmark"] == "train_step" and r["environment"]["device"] == "cpu"
    seconds = r["seconds"]
    assert set(seconds) == {"composed_step", "anchor_forward_backward", "augmenting_forward"}
    assert all(s > 0 for s in seconds.values())
    assert r["ratio"] == pytest.approx(
        seconds["composed_step"] / (seconds["anchor_forward_backward"] + seconds["augmenting_forward"])
    )
    assert r["target"]["ratio_at_most"] == 1.10
    assert r["setting"]["bridges"] >= 1 and r["setting"]["gradient_checkpointing"] is False


def test_decode_writes_its_ratio(results):
    r = results["decode"]
    assert r["environment"]["dtype"] == "bf16"
    ms = r["ms_per_step"]
    assert set(ms) == {"composed", "anchor", "augmenting"}
    assert r["ratio"] == pytest.approx((ms["anchor"] + ms["augmenting"]) / ms["composed"])
    assert r["sum_of_parts_tokens_per_s"] == pytest.approx(1000 / (ms["anchor"] + ms["augmenting"]))
    assert r["target"]["ratio_at_least"] == 0.85


def test_memory_writes_training_and_inference_peaks(results):
    r = results["memory"]
    held, above, peak = r["held_bytes"], r["peak_above_held_bytes"], r["peak_bytes"]
    assert peak["training"] == sum(held.values()) + above["training"]
    assert peak["inference"] == held["anchor"] + above["inference"]
    assert above["training"] > 0 and above["inference"] > 0
    assert r["training_over_inference"] > 1  # training holds both models, bridges, AdamW and activations
    assert r["estimate"] is None  # tiny models are not catalogue cards
    assert "TorchDispatchMode" in r["method"]


def test_summary_collects_the_runs(results, capsys):
    folder = results["folder"]
    summary.main([str(folder)])
    out = capsys.readouterr().out
    collected = json.loads((folder / "summary.json").read_text())
    assert sorted(collected["files"]) == ["decode.json", "memory.json", "train_step.json"]
    assert "train step ratio" in out and "decode ratio" in out and "peak memory" in out
    (folder / "elsewhere").mkdir()
    summary.main([str(folder), "--json", str(folder / "elsewhere" / "cpu.json")])  # benchmarks/cpu.sh's summary
    assert json.loads((folder / "elsewhere" / "cpu.json").read_text())["files"] == collected["files"]


def test_core_imports_need_none_of_the_absent_packages():
    """What the GPU image must import: calm_mini.compose, the catalogue and the harness."""
    code = (
        f"import sys\nsys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "import calm_mini.compose, calm_mini.catalogue, _harness\n"
        f"print(sorted(m for m in {ABSENT!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_hot_path_writes_forward_and_decode_ratios(tmp_path):
    r = run_quick("hot_path.py", tmp_path / "hot_path.json", expect="decode ratio")
    assert r["benchmark"] == "hot_path" and r["environment"]["threads"] == 1
    assert r["targets"] == {"forward_ratio_at_most": 1.05, "decode_ratio_at_least": 0.97}
    (pair,) = r["pairs"].values()
    assert len(pair["layer_map"]) == 2  # two bridges
    figures = [pair["forward"], *pair["decode"].values()]
    assert [int(n) for n in pair["decode"]] == r["setting"]["new_tokens"]
    for i, f in enumerate(figures):
        s = f["seconds"]
        official = {"official"} if i == 0 else set()  # the official-style side times the forward only
        assert set(s) == {"composed", "anchor", "augmenting", "bridges", *official} and all(t > 0 for t in s.values())
        parts = s["anchor"] + s["augmenting"]
        if i == 0:  # forward: composed ÷ parts
            assert f["ratio"] == pytest.approx(s["composed"] / parts)
            assert f["floor"] == pytest.approx((parts + s["bridges"]) / parts)
            assert f["official_ratio"] == pytest.approx(s["official"] / parts)
        else:  # decode: parts ÷ composed
            assert f["ratio"] == pytest.approx(parts / s["composed"])
            assert f["floor"] == pytest.approx(parts / (parts + s["bridges"]))
    composed = [f["seconds"]["composed"] for f in figures[1:]]
    assert composed == sorted(composed)  # seconds for the first N tokens grow with N
    w = pair["weights"]
    assert pair["weights_floor"] == pytest.approx((w["anchor"] + w["augmenting"]) / sum(w.values()))
    assert r["setting"]["mlp_ratio"] == 8


def test_official_style_forward_bridges_the_anchor_and_leaves_it_plain():
    """The official-style side of the hot-path benchmark does compose (its output differs from the
    anchor's, with bridges at the composed model's layer pairs) and removes its hooks afterwards."""
    import hot_path

    torch.manual_seed(0)
    model, anchor, augmenting = hot_path.build_pair(hot_path.QUICK_PAIRS["quick"], 8, 32, "cpu")
    assert anchor.config.intermediate_size == 8 * anchor.config.hidden_size
    official = hot_path.OfficialStyle(model, anchor, augmenting)
    ids = torch.randint(3, hot_path.VOCAB, (2, 12))
    with torch.no_grad():
        plain = anchor(ids).logits
        composed = official(ids, None).logits
        assert not torch.allclose(composed, plain, atol=1e-3)
        assert torch.equal(anchor(ids).logits, plain)  # no hook left behind


def test_data_path_writes_its_two_ratios(tmp_path):
    """benchmarks/data_path.py times the dataset path, so it needs datasets: it runs as it is."""
    out = tmp_path / "data_path.json"
    command = [sys.executable, str(BENCHMARKS / "data_path.py"), "--quick", "--rows", "400", "--threads", "1",
               "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tokenisation ÷ training it feeds" in done.stdout and "step new path ÷ hand-made tensors" in done.stdout
    r = json.loads(out.read_text())
    assert r["benchmark"] == "data_path" and r["setting"]["rows"] == 400
    assert r["targets"] == {"tokenisation_over_training_at_most": 0.10, "step_ratio_at_most": 1.05}
    steps, training = r["step_seconds"], r["training_it_feeds"]
    assert set(steps) == {"new_path", "hand_made", "before"} and all(s > 0 for s in steps.values())
    assert training["steps"] == 50 and training["seconds"] == pytest.approx(50 * steps["new_path"])
    assert r["tokenisation_over_training"] == pytest.approx(r["tokenisation_seconds"]["num_proc=1"] / training["seconds"])
    assert r["step_ratio"] == pytest.approx(steps["new_path"] / steps["hand_made"])
