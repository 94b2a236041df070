"""The key-value experiment's pipeline and command line, on the seconds-long smoke setting.
(The classroom targets are measured by `python -m calm_mini reproduce`, not by a timed test.)"""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from calm_mini import Evenly, compose
from calm_mini.experiments.kv import (
    PAPER,
    EncoderComposition,
    ExperimentConfig,
    ablations,
    build_base_models,
    compose_kv,
    encode_with_prompts,
    lora_anchor,
    placement_study,
    reproduce,
)
from calm_mini.experiments.kv.data import build_kv_splits
from calm_mini.experiments.kv.run import seeded
from calm_mini.experiments.reports import config_hash, format_table
from calm_mini.models import tiny
from conftest import make_pair, randomise_bridges

SMOKE = ExperimentConfig.smoke()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def base(cache):
    return build_base_models(SMOKE.kv, SMOKE.anchor, SMOKE.augmenting, cache, progress=False)


def test_reproduce_writes_results_and_resumes_from_its_checkpoint(tmp_path, cache):
    report = reproduce(SMOKE, tmp_path / "assets", cache, tmp_path / "ckpt", progress=False)
    saved = json.loads((tmp_path / "assets" / "kv_results_smoke.json").read_text())
    assert saved["table"] == report["table"]
    assert not (tmp_path / "assets" / "kv_results.json").exists(), "kv_results.json is the classroom setting's"
    assert set(report["table"]) == {"KV-SUBS", "NUM-MATH", "KV-MATH", "KV-MATH (D_C keys)"}
    assert set(report["table"]["KV-MATH"]) == {"m_A", "m_B", "CALM"}
    assert [e["step"] for e in report["log"]] == [5, 10] and "kv_math_heldout" in report["log"][-1]
    assert (tmp_path / "assets" / "figures" / "kv_table1.html").is_file()
    assert sorted(p.name for p in (tmp_path / "ckpt" / "bridges").iterdir()) == ["bridges.safetensors",
                                                                                   "calm_config.json"]
    again = reproduce(SMOKE, tmp_path / "assets", cache, tmp_path / "ckpt", progress=False)
    assert again["table"] == report["table"], "a rerun resumes the finished checkpoint and gives the same table"


def test_seeded_sets_every_seed_and_changes_the_data():
    assert seeded(SMOKE, 0) == SMOKE, "seed 0 is the default run"
    one = seeded(SMOKE, 1)
    assert (one.kv.seed, one.anchor.train.seed, one.augmenting.train.seed, one.bridges.seed) == (1, 1, 1, 1)
    assert build_kv_splits(one.kv).keys != build_kv_splits(SMOKE.kv).keys


def test_seeds_on_the_command_line_are_a_count_or_a_list():
    import argparse

    from calm_mini.cli import _seeds

    assert _seeds("5") == [0, 1, 2, 3, 4] and _seeds("0,3,7") == [0, 3, 7] and _seeds("3,") == [3]
    for bad in ("0", "1,1", "x", "-1,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
            _seeds(bad)


def test_two_seeds_give_per_seed_runs_and_their_mean_min_and_max(tmp_path, cache):
    report = reproduce(SMOKE, tmp_path, cache, None, progress=False, seeds=[0, 1])
    runs = report["per_seed"]
    assert [r["seed"] for r in runs] == report["seeds"] == [0, 1]
    assert runs[0]["log"] != runs[1]["log"], "each seed trains its own data, base models and bridges"
    alone = reproduce(seeded(SMOKE, 1), tmp_path / "one", cache, None, progress=False)
    assert runs[1]["table"] == alone["table"], "a seed's table is that seed's own run"
    for task, cells in report["range"].items():
        for model, r in cells.items():
            values = [run["table"][task][model] for run in runs]
            assert (r["min"], r["max"]) == (min(values), max(values))
            assert r["mean"] == round(sum(values) / 2, 1) == report["table"][task][model]
    assert report["config_hash"] == config_hash(SMOKE) and report["calm_mini_version"]
    saved = json.loads((tmp_path / "kv_results_smoke.json").read_text())
    assert saved["range"] == report["range"] and saved["per_seed"][1]["table"] == runs[1]["table"]
    title = (tmp_path / "figures" / "kv_table1.html").read_text()
    assert f"smoke, mean of seeds 0, 1, calm_mini {report['calm_mini_version']}" in title


def test_format_table_shows_the_papers_numbers():
    text = format_table({"KV-MATH": {"m_A": 1.0, "CALM": 92.5}}, PAPER)
    assert "92.5 (paper 84.3)" in text and "1.0 (paper 0.7)" in text
    assert PAPER["KV-MATH"]["CALM"] == 84.3


def test_lora_matches_the_bridge_budget(base):
    budget = compose_kv(base, SMOKE).num_bridge_parameters()
    lora = lora_anchor(base.anchor, budget)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0.5 * budget <= trainable <= 1.5 * budget
    assert all(not p.requires_grad for p in base.anchor.parameters()), "the shared anchor stays frozen"


def test_encoder_ablation_trains_on_prompts(base):
    data = encode_with_prompts(base.data.splits["dc_train"], base.data.tokenizer)
    assert data["encoder_ids"].shape[0] == data["input_ids"].shape[0]
    model = EncoderComposition.of(compose_kv(base, SMOKE))
    batch = {k: v[:4] for k, v in data.items()}
    assert torch.isfinite(model(**batch).loss)
    ids = data["encoder_ids"][:2]
    out = model.generate(ids, data["encoder_mask"][:2], max_new_tokens=2, do_sample=False, pad_token_id=0,
                         eos_token_id=None)  # two new tokens whatever the smoke models predict
    assert out.shape == (2, ids.shape[1] + 2)


@torch.no_grad()
def test_encoder_ablation_reads_only_the_prompt():
    anchor, augmenting = make_pair("llama<-gpt2")
    calm = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    model = EncoderComposition.of(calm)
    prompt = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = (prompt != 0).long()
    full = torch.cat([prompt, torch.tensor([[20, 21], [22, 23]])], dim=1)
    full_mask = torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], dim=1)
    out = model(full, attention_mask=full_mask, encoder_ids=prompt, encoder_mask=mask).logits
    assert not torch.allclose(out, calm(full, attention_mask=full_mask).logits), "encoder differs from CALM"
    changed = prompt.clone()
    changed[:, -1] = 30
    moved = model(full, attention_mask=full_mask, encoder_ids=changed, encoder_mask=mask).logits
    assert not torch.allclose(out[0, 0], moved[0, 0]), "an encoder lets early positions read the whole prompt"
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(prompt, attention_mask=mask, **kwargs)
    assert torch.equal(cached, model.generate(prompt, attention_mask=mask, use_cache=False, **kwargs))
    with pytest.raises(ValueError, match="encoder_ids"):
        model(full, attention_mask=full_mask)


def test_the_kv_bridges_normalise_their_inputs_unless_told_not_to(base):
    assert ExperimentConfig.classroom().normalize_inputs and ExperimentConfig.paper_cpu().normalize_inputs
    assert all(bridge.normalize_inputs for bridge in compose_kv(base, SMOKE).bridges)
    raw = compose_kv(base, replace(SMOKE, normalize_inputs=False))
    assert not any(bridge.normalize_inputs for bridge in raw.bridges)
    assert config_hash(replace(SMOKE, normalize_inputs=False)) != config_hash(SMOKE), "it is part of the config"


def test_ablations_run_every_variant(tmp_path, cache):
    report = ablations(SMOKE, tmp_path, cache, progress=False, placements={"embeddings": ((1, -1),)})
    assert set(report["variants"]) == {"CALM", "CALM, raw bridge inputs", "random m_A", "vanilla m_A",
                                       "m_A as encoder", "LoRA on m_B", "fine-tuned m_B (skyline)"}
    assert report["variants"]["CALM, raw bridge inputs"]["trainable"] == report["budget"]
    assert set(report["placement"]) == {"embeddings", "embeddings + recency"}
    assert report["variants"]["CALM"]["trainable"] == report["budget"]
    assert report["variants"]["fine-tuned m_B (skyline)"]["trainable"] > report["budget"]
    assert json.loads((tmp_path / "kv_ablations.json").read_text())["budget"] == report["budget"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "calm_mini", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["reproduce", "--setting", "huge"], "Unknown setting 'huge'"),
        (["reproduce", "--dc-fraction", "0"], "gives 0 D_C keys"),
        (["reproduce", "--tasks", "KV-DIV"], "invalid choice: 'KV-DIV'"),
        (["ablations", "--dc-fraction", "1.0"], "need at least one D_C key and one held-out key"),
    ],
)
def test_cli_refuses_bad_settings_clearly(args, message):
    result = _cli(*args)
    assert result.returncode != 0 and message in result.stderr


def test_cli_refuses_a_corrupt_checkpoint(tmp_path, cache):
    args = ["reproduce", "--setting", "smoke", "--quiet", "--assets", str(tmp_path), "--cache-dir", str(cache),
            "--checkpoints", str(tmp_path / "ckpt")]
    assert _cli(*args).returncode == 0
    (tmp_path / "ckpt" / "latest.json").write_text("{not json")
    result = _cli(*args)
    assert result.returncode == 2 and "corrupt" in result.stderr


def test_a_single_run_writes_to_runs_and_is_placed_against_the_committed_range(tmp_path, cache):
    """`make run` (one seed) prints each CALM cell against the committed multi-seed range and never
    overwrites the committed file in assets/."""
    committed = {"setting": "smoke", "config_hash": config_hash(SMOKE), "seeds": [0, 1, 2, 3, 4],
                 "range": {"KV-MATH": {"CALM": {"mean": 50.0, "min": 40.0, "max": 60.0}},
                           "NUM-MATH": {"CALM": {"mean": 0.0, "min": 0.0, "max": 10.0}}}}
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "kv_results_smoke.json").write_text(json.dumps(committed))
    result = subprocess.run([sys.executable, "-m", "calm_mini", "reproduce", "--setting", "smoke", "--quiet",
                             "--cache-dir", str(cache), "--no-checkpoints"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ran = json.loads((tmp_path / "runs" / "kv_results_smoke.json").read_text())["table"]
    assert f"KV-MATH · CALM: {ran['KV-MATH']['CALM']:.1f}  (committed 5-seed range 40.0–60.0" in result.stdout
    verdicts = {task: "inside" if lo <= ran[task]["CALM"] <= hi else "OUTSIDE"
                for task, (lo, hi) in {"KV-MATH": (40, 60), "NUM-MATH": (0, 10)}.items()}
    for task, verdict in verdicts.items():
        assert any(line.startswith(f"{task} · CALM") and line.endswith(verdict) for line in result.stdout.splitlines())
    assert json.loads((tmp_path / "assets" / "kv_results_smoke.json").read_text()) == committed


@pytest.mark.parametrize("setting", ["smoke", "classroom", "full"])
def test_the_placement_study_fits_every_setting(setting):
    """Each placement of the study is a valid layer map for that setting's models (it once assumed
    a 4-layer anchor, so `ablations --setting smoke` failed)."""
    cfg = ExperimentConfig.named(setting)
    anchor = tiny("llama", hidden_size=32, num_layers=cfg.anchor.n_layers, vocab_size=64)
    augmenting = tiny("llama", hidden_size=32, num_layers=cfg.augmenting.n_layers, vocab_size=64)
    study = placement_study(cfg)
    assert study["embeddings + every layer"] == tuple(tuple(p) for p in cfg.layers)
    for name, layers in study.items():
        assert len(compose(anchor, augmenting, layers=list(layers)).bridges) == len(layers), name
