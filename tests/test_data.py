"""Your own data through calm_mini.training.data: each format's labels mask exactly what it should
(decoded and compared), files of every kind load, truncation is counted, and bad input is a
clear error."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from calm_mini.training.data import IGNORE, as_tensors, encode, load_examples

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where was Orlen born?"},
        {"role": "assistant", "content": "In Tavrik."}, {"role": "user", "content": "And Mira?"},
        {"role": "assistant", "content": "In Gifu."}]


@pytest.fixture(scope="module")
def tokenizer():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([m["content"] for m in CHAT] * 20 + ["the cat sat on the mat"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def labelled(encoded, tokenizer, row=0) -> str:
    ids, labels = encoded.rows[row]["input_ids"], encoded.rows[row]["labels"]
    assert len(ids) == len(labels)
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels)), "a label is the token itself or ignored"
    return tokenizer.decode([i for i, label in zip(ids, labels) if label != IGNORE])


def test_text_learns_every_token(tokenizer):
    encoded = encode(load_examples_from({"text": ["the cat sat"]}), tokenizer, "text")
    assert labelled(encoded, tokenizer) == "the cat sat<|im_end|>"


def test_completion_learns_the_completion_only(tokenizer):
    encoded = encode(load_examples_from({"prompt": ["Where was Orlen born?"], "completion": [" In Tavrik."]}),
                     tokenizer, "completion")
    assert labelled(encoded, tokenizer) == " In Tavrik.<|im_end|>"


def test_chat_learns_the_assistant_turns_only(tokenizer):
    encoded = encode(load_examples_from({"messages": [CHAT]}), tokenizer, "chat")
    assert labelled(encoded, tokenizer) == "In Tavrik.<|im_end|>\nIn Gifu.<|im_end|>\n"
    whole = tokenizer.decode(encoded.rows[0]["input_ids"])
    assert whole == tokenizer.apply_chat_template(CHAT, tokenize=False), "the ids are the rendered conversation"


def test_truncation_is_counted_and_empty_rows_dropped(tokenizer):
    data = load_examples_from({"prompt": ["Where was Orlen born?", "x"], "completion": [" In Tavrik.", " y"]})
    prompt_length = len(tokenizer("Where was Orlen born?")["input_ids"])
    encoded = encode(data, tokenizer, "completion", max_length=prompt_length)
    assert (encoded.truncated, encoded.dropped, len(encoded.rows)) == (1, 1, 1)
    with pytest.raises(ValueError, match="No example has a token to learn within max_length=2"):
        encode(data.select([0]), tokenizer, "completion", max_length=2)


def test_files_of_every_kind_load_and_pad(tmp_path, tokenizer):
    rows = [{"prompt": "a", "completion": " bb"}, {"prompt": "ccc", "completion": " d"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("prompt,completion\na, bb\nccc, d\n")
    load_examples(tmp_path / "d.jsonl").to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("the cat\nsat\n")
    for name in ("d.jsonl", "d.json", "d.csv", "d.parquet"):
        assert load_examples(tmp_path / name).to_list() == rows, name
    assert load_examples(tmp_path / "d.txt")["text"] == ["the cat", "sat"]
    batch = as_tensors(encode(load_examples(tmp_path / "d.jsonl"), tokenizer, "completion"), tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_bad_input_is_a_clear_error(tmp_path, tokenizer, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_examples(tmp_path / "empty.jsonl")
    (tmp_path / "d.xlsx").write_text("")
    with pytest.raises(ValueError, match="use one of"):
        load_examples(tmp_path / "d.xlsx")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read from the environment at import
    with pytest.raises(ConnectionError, match="pass a local path"):
        load_examples("someone/some-dataset")
    data = load_examples_from({"text": ["a"]})
    with pytest.raises(ValueError, match="Unknown data format 'prose'"):
        encode(data, tokenizer, "prose")
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['prompt', 'completion'\]"):
        encode(data, tokenizer, "completion")
    with pytest.raises(ValueError, match="no assistant turn"):
        encode(load_examples_from({"messages": [CHAT[:2]]}), tokenizer, "chat")


def load_examples_from(columns: dict):
    from datasets import Dataset

    return Dataset.from_dict(columns)
