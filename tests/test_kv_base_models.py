"""Base-model training, caching and exact-match evaluation on a micro setting (CPU, seconds)."""

from __future__ import annotations

import torch

from dataclasses import replace

from calm_mini.evaluation import exact_match, generate_answers
from calm_mini.experiments.kv import BASE_TRAINING, BaseModelConfig, KVConfig, build_kv_splits, load_or_train, train_causal_lm
from calm_mini.training import encode_examples

MICRO_DATA = KVConfig.classroom(n_keys=40, n_anchor_train=40, n_dc_train=40, n_eval=10, n_eval_kv_math=10)
MICRO_MODEL = BaseModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64,
                              train=replace(BASE_TRAINING, steps=30, batch_size=16, warmup_steps=3))


def test_encoding_masks_padding_and_prompt():
    data = build_kv_splits(MICRO_DATA)
    batch = encode_examples(data.splits["anchor_train"], data.tokenizer)
    tok = data.tokenizer
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == tok.pad_token_id).all()
    assert (batch["labels"][pad] == -100).all()
    assert (batch["input_ids"][:, 0] == tok.bos_token_id).all()
    n_prompt = len(tok(data.splits["anchor_train"][0]["prompt"])["input_ids"])
    assert (batch["labels"][0, :n_prompt] == -100).all()
    assert (batch["labels"][0, n_prompt:] != -100).any()


def test_training_lowers_the_loss_and_is_seeded():
    data = build_kv_splits(MICRO_DATA)
    model, log = train_causal_lm(data.splits["augmenting_train"], data.tokenizer, MICRO_MODEL,
                                 progress=False)
    _, again = train_causal_lm(data.splits["augmenting_train"], data.tokenizer, MICRO_MODEL,
                               progress=False)
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    assert log == again
    assert not model.training


def test_cache_reuses_the_saved_model(tmp_path):
    data = build_kv_splits(MICRO_DATA)
    first = load_or_train("anchor", data, MICRO_MODEL, tmp_path, progress=False)
    folders = [p for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].name.startswith("anchor-")
    saved = {p.name for p in folders[0].iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= saved
    second = load_or_train("anchor", data, MICRO_MODEL, tmp_path, progress=False)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert len(list(tmp_path.iterdir())) == 1  # no temporary folders left behind


class Oracle:
    """A stand-in with a HF-style ``generate`` that appends fixed tokens to every prompt."""

    training = False

    def __init__(self, answer_ids: list[int]):
        self.answer_ids = answer_ids
        self.seen_masks: list[torch.Tensor] = []

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id,
                 eos_token_id):
        self.seen_masks.append(attention_mask)
        new = torch.tensor(self.answer_ids).expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, new], dim=1)


def test_exact_match_works_with_any_generate_and_pads_left():
    data = build_kv_splits(MICRO_DATA)
    tok = data.tokenizer
    ds = data.splits["eval_kv_subs"]
    value = ds[0]["answer"]
    oracle = Oracle(tok(value, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, 5])
    expected = sum(a == value for a in ds["answer"]) / len(ds)
    assert exact_match(oracle, tok, ds, batch_size=4) == expected
    assert all((m[:, -1] == 1).all() for m in oracle.seen_masks)  # left padding
    assert generate_answers(oracle, tok, ["3+4="]) == [value]


def test_left_padded_batches_answer_like_single_prompts():
    data = build_kv_splits(MICRO_DATA)
    model, _ = train_causal_lm(data.splits["anchor_train"], data.tokenizer, MICRO_MODEL,
                               progress=False)
    splits = data.splits
    prompts = [*splits["eval_kv_subs"]["prompt"][:5], *splits["eval_kv_math_dc"]["prompt"][:5],
               "12+3="]  # 1, 4 and 5 tokens after BOS
    batched = generate_answers(model, data.tokenizer, prompts, batch_size=len(prompts))
    single = generate_answers(model, data.tokenizer, prompts, batch_size=1)
    assert batched == single
