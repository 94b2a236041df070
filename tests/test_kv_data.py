"""Properties of the key-value arithmetic data (offline, CPU, seconds)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from calm_mini.experiments.kv import TASKS, ExperimentConfig, KVConfig, build_kv_splits, evaluate_expression
from calm_mini.experiments.kv.data import KV_MATH, KV_SUBS, NUM_MATH, dc_sizes

MICRO = dict(n_keys=50, n_anchor_train=60, n_dc_train=80, n_eval=20, n_eval_kv_math=20)


@pytest.fixture(scope="module")
def data():
    return build_kv_splits(KVConfig.classroom(**MICRO))


def _exprs(ds) -> set[str]:
    return set(ds["prompt"])


def test_every_key_is_one_token(data):
    tok = data.tokenizer
    for key in data.keys:
        assert tok(key, add_special_tokens=False)["input_ids"] != [tok.unk_token_id]
        assert len(tok(key, add_special_tokens=False)["input_ids"]) == 1


def test_digits_and_operators_are_single_tokens(data):
    tokens = data.tokenizer.convert_ids_to_tokens(data.tokenizer("12+3*4-5=-7")["input_ids"])
    assert tokens == ["[BOS]", "1", "2", "+", "3", "*", "4", "-", "5", "=", "-", "7"]


def test_tokenizer_round_trips_after_save_and_reload(data, tmp_path):
    data.tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [*data.splits["dc_train"]["text"][:20], *data.splits["augmenting_train"]["text"][:20]]
    for text in texts:
        ids = data.tokenizer(text)["input_ids"]
        assert reloaded(text)["input_ids"] == ids
        assert reloaded.decode(ids, skip_special_tokens=True) == text
    assert (reloaded.pad_token_id, reloaded.bos_token_id, reloaded.eos_token_id) == (
        data.tokenizer.pad_token_id, data.tokenizer.bos_token_id, data.tokenizer.eos_token_id)


def test_columns_and_text_is_prompt_plus_answer(data):
    for ds in data.splits.values():
        assert {"prompt", "answer", "text", "task", "keys"} <= set(ds.column_names)
        assert all(p + a == t for p, a, t in zip(ds["prompt"], ds["answer"], ds["text"]))


def test_answers_are_correct(data):
    for row in data.splits["dc_train"]:
        expression = row["prompt"] if row["task"] == KV_SUBS else row["prompt"][:-1]  # KV-SUBS: "kaz"
        assert int(row["answer"]) == evaluate_expression(expression, data.keys)
    for row in data.splits["augmenting_train"]:
        assert row["prompt"] == row["keys"][0]  # "direct": value follows the key token
        assert int(row["answer"]) == data.keys[row["keys"][0]]
    assert evaluate_expression("2+3*4-5*2") == 4


def test_equals_format():
    data = build_kv_splits(KVConfig.classroom(**MICRO, kv_format="equals"))
    row = data.splits["augmenting_train"][0]
    assert row["prompt"] == row["keys"][0] + "="


def test_dc_keys_cover_the_fraction_and_are_disjoint_from_heldout(data):
    assert len(data.dc_keys) == round(0.2 * len(data.keys))
    assert not set(data.dc_keys) & set(data.heldout_keys)
    assert set(data.dc_keys) | set(data.heldout_keys) == set(data.keys)


def test_splits_use_the_right_keys(data):
    used = lambda ds: {k for keys in ds["keys"] for k in keys}  # noqa: E731
    assert used(data.splits["augmenting_train"]) == set(data.keys)
    assert used(data.splits["dc_train"]) <= set(data.dc_keys)
    assert used(data.splits["eval_kv_math_dc"]) <= set(data.dc_keys)
    assert used(data.splits["eval_kv_math_heldout"]) <= set(data.heldout_keys)
    assert used(data.splits["eval_kv_subs"]) == set(data.heldout_keys)
    assert not used(data.splits["anchor_train"]) and not used(data.splits["eval_num_math"])


def test_eval_expressions_not_in_training(data):
    training = _exprs(data.splits["anchor_train"]) | _exprs(data.splits["dc_train"])
    for name in ("eval_num_math", "eval_kv_math_dc", "eval_kv_math_heldout"):
        assert not _exprs(data.splits[name]) & training, name


def test_dc_mixes_num_math_and_kv_subs_by_the_set_ratios(data):
    tasks = list(data.splits["dc_train"]["task"])
    assert len(tasks) == MICRO["n_dc_train"]
    cfg = KVConfig.classroom()
    assert tasks.count(NUM_MATH) == round(cfg.dc_num_math_fraction * MICRO["n_dc_train"])
    assert tasks.count(KV_SUBS) == round(cfg.dc_kv_subs_fraction * MICRO["n_dc_train"]) > 0
    assert tasks.count(KV_MATH) == dc_sizes(data.config)[KV_MATH]


@pytest.fixture(scope="module", params=["classroom", "paper_cpu"])
def reported(request):
    """The splits of a setting whose table is reported."""
    return build_kv_splits(ExperimentConfig.named(request.param).kv)


def test_no_heldout_key_appears_in_dc(reported):
    """Read the D_C texts token by token: not one held-out key, in any task of D_C."""
    tok, heldout = reported.tokenizer, set(reported.heldout_keys)
    tokens = {t for text in reported.splits["dc_train"]["text"]
              for t in tok.convert_ids_to_tokens(tok(text)["input_ids"])}
    assert tokens & set(reported.dc_keys), "D_C uses the D_C keys"
    assert not tokens & heldout


def test_kv_subs_is_asked_in_the_format_dc_teaches(reported):
    """The composition is asked KV-SUBS on held-out keys exactly as D_C shows it on D_C keys,
    and as m_A learnt it: prompt = the key (+ "=" in the equals format), answer = its value."""
    suffix = "=" if reported.config.kv_format == "equals" else ""
    dc_subs = reported.splits["dc_train"].filter(lambda r: r["task"] == KV_SUBS)
    for split in (dc_subs, reported.splits["eval_kv_subs"], reported.splits["augmenting_train"]):
        assert len(split) and all(r["prompt"] == r["keys"][0] + suffix and r["answer"] == str(reported.keys[r["keys"][0]])
                                  for r in split)
    assert set(dc_subs["prompt"]) <= {k + suffix for k in reported.dc_keys}


def test_every_reported_cell_rests_on_200_examples(reported):
    """One example is at most 0.5 points in every cell of the table."""
    for task, split in TASKS.items():
        assert len(reported.splits[split]) >= 200, task


def test_split_sizes(data):
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes["anchor_train"] == 60 and sizes["augmenting_train"] == 50
    assert sizes["eval_num_math"] == sizes["eval_kv_math_dc"] == sizes["eval_kv_math_heldout"] == 20


def test_deterministic_under_seed(data):
    again = build_kv_splits(KVConfig.classroom(**MICRO))
    other = build_kv_splits(KVConfig.classroom(**MICRO, seed=1))
    assert again.keys == data.keys
    assert all(again.splits[k].to_list() == v.to_list() for k, v in data.splits.items())
    assert other.keys != data.keys


def test_presets_are_valid():
    full = KVConfig.full()
    assert set(full.operators) == set("+-*") and full.n_operands == (3, 6)
    assert KVConfig.classroom().n_dc_keys == 60


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dc_fraction": 0.0}, "D_C key"),
        ({"dc_fraction": 1.0}, "held-out key"),
        ({"operators": "+/"}, "operators"),
        ({"value_range": (9, 0)}, "min <= max"),
        ({"n_operands": (3, 2)}, "min <= max"),
        ({"n_operands": (1, 2)}, "2 <= min"),
        ({"n_keys": 400, "key_length": 1}, "key_length"),
        ({"n_anchor_train": 5000}, "distinct expressions"),
        ({"number_range": (0, 9)}, "distinct expressions"),
        ({"number_range": (1, 19)}, "must contain value_range"),
        ({"dc_num_math_fraction": 1.0}, "dc_num_math_fraction"),
        ({"dc_num_math_fraction": 0.5, "dc_kv_subs_fraction": 0.5}, "sum < 1"),
        ({"dc_kv_subs_fraction": -0.1}, "dc_kv_subs_fraction"),
        ({"kv_format": "colon"}, "kv_format"),
    ],
)
def test_bad_settings_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        KVConfig.classroom(**overrides)


def test_the_anchors_numbers_contain_every_value_a_key_stands_for(data):
    lo, hi = data.config.value_range
    assert all(lo <= v <= hi for v in data.keys.values())
    numbers = {int(n) for e in data.splits["anchor_train"]["prompt"] for n in e[:-1].replace("-", "+").split("+")}
    assert set(range(lo, hi + 1)) <= numbers <= set(range(data.config.number_range[0], data.config.number_range[1] + 1))
    assert max(numbers) > hi, "the classroom anchor also meets numbers no key stands for"
