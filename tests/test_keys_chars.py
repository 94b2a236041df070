"""The cross-tokenizer keys experiment: its splits, its bridge data, and a smoke run with a tiny
anchor (a byte-level BPE, as SmolLM2's) that finishes in seconds and leaves both base models
exactly as they were."""

import json
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from calm_mini.crosstok import CrossTokenizerModel
from calm_mini.crosstok.tokenizers import PROBE
from calm_mini.experiments.keys_chars import (
    KeysCharsConfig,
    KeysConfig,
    bridge_data,
    build_data,
    compose_keys,
    load_or_train_augmenting,
    make_keys,
    run,
    train_bridges,
)
from calm_mini.models import tiny
from calm_mini.training import TrainConfig

SMALL = KeysConfig(n_keys=24, dc_fraction=0.5, eval_keys=4)


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE (SmolLM2's kind of tokenizer) trained on the task's text."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    data = build_data(SMALL)
    texts = [r["prompt"] + r["answer"] for r in data.dc_rows + data.heldout_rows] + [PROBE]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")


def smoke_config(**overrides) -> KeysCharsConfig:
    """Seconds on a CPU: a 4-layer tiny anchor, a 1-layer m_A, a few steps of each."""
    cfg = KeysCharsConfig(
        setting="smoke", keys=SMALL, layers=((0, 2), (0, 3)),
        augmenting=replace(KeysCharsConfig().augmenting, n_layers=1, d_model=32, n_heads=2, d_ff=64,
                           train=replace(KeysCharsConfig().augmenting.train, steps=5, batch_size=8)),
        bridges=TrainConfig(steps=3, batch_size=4, warmup_steps=1, log_every=1), eval_batch_size=16,
    )
    return replace(cfg, **overrides)


def test_keys_are_seeded_distinct_and_never_inside_a_template():
    keys = make_keys(KeysConfig(n_keys=200))
    assert keys == make_keys(KeysConfig(n_keys=200)) and keys != make_keys(KeysConfig(n_keys=200, seed=1))
    assert len(keys) == 200 and set(keys.values()) <= set(range(10))
    templates = KeysConfig().templates
    assert "digi" not in keys and "code" not in keys  # inside "secret digit " and "code "
    assert not any(k in t.replace("{k}", "") for k in keys for t in templates)
    assert not make_keys(KeysConfig(n_keys=50, templates=("{k} bavo ",))).get("bavo")


def test_the_splits_share_no_key():
    data = build_data(KeysConfig())
    assert not set(data.dc_keys) & set(data.heldout_keys)
    assert sorted(data.dc_keys + data.heldout_keys) == sorted(data.keys)
    assert len(data.dc_keys) == KeysConfig().n_dc_keys
    rows = {"dc": data.dc_rows, "heldout": data.heldout_rows, "seen": data.seen_rows}
    keys_of = {name: {r["prompt"].split(":")[0] for r in rs} for name, rs in rows.items()}
    assert keys_of["dc"] == set(data.dc_keys) and keys_of["seen"] <= set(data.dc_keys)
    assert keys_of["heldout"] <= set(data.heldout_keys) and len(keys_of["heldout"]) == KeysConfig().eval_keys
    assert all(r["answer"] == str(data.keys[r["prompt"].split(":")[0]]) for rs in rows.values() for r in rs)
    assert len(data.facts) == len(data.keys)  # m_A learns every key, held-out ones included


def test_bad_settings_are_refused_clearly():
    with pytest.raises(ValueError, match="one held-out key"):
        KeysConfig(n_keys=10, dc_fraction=1.0)
    with pytest.raises(ValueError, match="'\\{k\\}'"):
        KeysConfig(templates=("no key here ",))
    assert KeysCharsConfig.named("full").bridges.steps > KeysCharsConfig.named("classroom").bridges.steps
    with pytest.raises(ValueError, match="Unknown setting"):
        KeysCharsConfig.named("huge")


def test_heldout_keys_never_appear_in_the_bridge_training_rows(tokenizer):
    data = build_data(SMALL)
    encoded = bridge_data(data, tokenizer)
    texts = tokenizer.batch_decode(encoded["input_ids"], skip_special_tokens=True)
    assert len(texts) == len(data.dc_keys) * len(SMALL.templates)
    assert not [k for k in data.heldout_keys if any(k in t for t in texts)]
    assert {t.split(":")[0] for t in texts} == set(data.dc_keys)
    labelled = [tokenizer.decode(ids[labels != -100]) for ids, labels in zip(encoded["input_ids"], encoded["labels"])]
    assert labelled == [r["answer"] + tokenizer.eos_token for r in data.dc_rows]  # the digit and the end token


def test_the_base_models_stay_bit_identical_through_training(tokenizer, tmp_path):
    cfg = smoke_config()
    data = build_data(cfg.keys)
    anchor = tiny("llama", hidden_size=32, num_layers=4, vocab_size=len(tokenizer))
    augmenting, chars, _ = load_or_train_augmenting(data, cfg.augmenting, cache_dir=tmp_path, progress=False)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (anchor, augmenting)]
    model = compose_keys(anchor, augmenting, tokenizer, chars, cfg)
    assert isinstance(model, CrossTokenizerModel)
    bridges = {k: v.clone() for k, v in model.bridges.state_dict().items()}
    log = train_bridges(model, data, tokenizer, cfg, progress=False)
    assert len(log) == cfg.bridges.steps
    for m, saved in zip((anchor, augmenting), before):
        assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items())
        assert not any(p.requires_grad for p in m.parameters())
    assert any(not torch.equal(v, bridges[k]) for k, v in model.bridges.state_dict().items())  # the bridges trained


def test_a_smoke_run_with_a_tiny_anchor_returns_the_report(tokenizer, tmp_path):
    anchor = tiny("llama", hidden_size=32, num_layers=4, vocab_size=len(tokenizer))
    report = run(smoke_config(), anchor, tokenizer, tmp_path / "assets", tmp_path / "cache", progress=False)
    assert json.loads((tmp_path / "assets" / "keys_chars_results.json").read_text())["table"] == report["table"]
    assert set(report["table"]["held-out keys"]) == {"anchor", "augmenting", "composite"}
    assert set(report["table"]["D_C keys"]) == {"composite"}
    assert all(0 <= v <= 100 for row in report["table"].values() for v in row.values())
    assert report["keys"] == {"all": 24, "dc": 12, "heldout": 12, "scored": 4, "templates": 3}
    assert 0 <= report["augmenting_own_format"] <= 100 and len(report["log"]) == 3
    assert report["bridge_parameters"] > 0 and not report["seconds"]["augmenting_cached"]
    again = run(smoke_config(), anchor, tokenizer, None, tmp_path / "cache", progress=False)
    assert again["seconds"]["augmenting_cached"] and again["table"] == report["table"]
    with pytest.raises(ValueError, match="both anchor and tokenizer"):
        run(smoke_config(), anchor)
