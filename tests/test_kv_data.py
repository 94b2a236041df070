"""Properties of the key-value arithmetic data (offline, CPU, seconds)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from calm_mini.experiments.kv import KVConfig, build_kv_splits, evaluate_expression

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
        assert int(row["answer"]) == evaluate_expression(row["prompt"][:-1], data.keys)
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


def test_dc_mixes_num_math_by_the_set_ratio(data):
    tasks = list(data.splits["dc_train"]["task"])
    assert len(tasks) == MICRO["n_dc_train"]
    assert tasks.count("num_math") == round(KVConfig.classroom().dc_num_math_fraction * MICRO["n_dc_train"])


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
        ({"n_anchor_train": 500}, "distinct expressions"),
        ({"dc_num_math_fraction": 1.0}, "dc_num_math_fraction"),
        ({"kv_format": "colon"}, "kv_format"),
    ],
)
def test_bad_settings_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        KVConfig.classroom(**overrides)
