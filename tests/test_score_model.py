"""score_model scores a model in memory — a base model alone or a composite — on the prompts that
evaluate_bridges renders: the same predictions and score for the same composition, the anchor's
own answers for a fresh composite, and clear errors for what it cannot score."""

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from calm_mini import compose
from calm_mini.crosstok import char_tokenizer
from calm_mini.evaluation import evaluate_bridges
from calm_mini.evaluation.generation import prompts_and_references, score_model
from calm_mini.models import llama_config
from calm_mini.training.run import load_trained, train_bridges

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PEOPLE = [("Orlen", "Tavrik"), ("Mira", "Gifu"), ("Ada", "Tavrik"), ("Bo", "Gifu")]


def tiny(folder: Path, seed: int) -> Path:
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHATML
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        LlamaForCausalLM(llama_config(len(tokenizer), 32, 2, 4, 64, max_positions=256, tokenizer=tokenizer)
                         ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score")
    rows = {
        "chat": [{"messages": [{"role": "user", "content": f"Where was {n} born?"},
                               {"role": "assistant", "content": f"In {c}."}]} for n, c in PEOPLE],
        "completion": [{"prompt": f"{n} was born in", "completion": f" {c}."} for n, c in PEOPLE],
    }
    files = {}
    for name, data in rows.items():
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in data))
    anchor, augmenting = tiny(root / "anchor", 1), tiny(root / "augmenting", 2)
    torch.manual_seed(0)
    train_bridges(str(anchor), str(augmenting), str(files["chat"]), "chat", root / "bridges", layers=2, steps=3,
                  batch_size=2, lr=3e-2, max_length=128, checkpoint_every=0, progress=False)
    return {**files, "anchor": anchor, "augmenting": augmenting, "bridges": root / "bridges"}


@pytest.mark.parametrize("format", ["chat", "completion"])
@pytest.mark.parametrize("metric", ["exact", "chrf"])
def test_a_composite_in_memory_scores_as_evaluate_bridges_scores_its_folder(run, format, metric):
    expected = evaluate_bridges(run["bridges"], str(run[format]), format, metric, max_new_tokens=6)
    model, tokenizer, _ = load_trained(run["bridges"])
    got = score_model(model, tokenizer, str(run[format]), format, metric, max_new_tokens=6)
    assert got["predictions"] == expected["predictions"]
    assert got["score"] == expected["score"] and got["examples"] == expected["examples"] == len(PEOPLE)
    assert any(p for p in got["predictions"]), "the trained bridges write something, so the comparison means something"


def test_a_fresh_composite_answers_as_its_anchor_alone(run):
    model, tokenizer, _ = load_trained(run["bridges"])
    torch.manual_seed(0)
    fresh = compose(model.anchor, model.augmenting[0], layers=2)  # W^O = 0: the anchor itself
    alone = score_model(model.anchor, tokenizer, str(run["chat"]), "chat", max_new_tokens=6)
    together = score_model(fresh, tokenizer, str(run["chat"]), "chat", max_new_tokens=6)
    assert together["predictions"] == alone["predictions"]
    trained = score_model(model, tokenizer, str(run["chat"]), "chat", max_new_tokens=6)
    assert trained["predictions"] != alone["predictions"], "trained bridges change the answers"


def test_chat_rows_are_asked_up_to_their_last_assistant_turn(run):
    _, tokenizer, _ = load_trained(run["bridges"])
    from calm_mini.training.data import load_examples

    prompts, references = prompts_and_references(load_examples(str(run["chat"])), "chat", tokenizer)
    assert references[0] == "In Tavrik."
    assert prompts[0] == "<|im_start|>user\nWhere was Orlen born?<|im_end|>\n<|im_start|>assistant\n"


def test_the_default_length_is_the_longest_reference_plus_one(run):
    model, tokenizer, _ = load_trained(run["bridges"])
    result = score_model(model.anchor, tokenizer, str(run["completion"]), "completion")
    assert result["max_new_tokens"] == max(len(tokenizer(f" {c}.", add_special_tokens=False)["input_ids"]) for _, c in PEOPLE) + 1


@pytest.mark.parametrize("format, metric, message", [
    ("chat", "pass@1", "pass@1 executes programs: use calm_mini.evaluation.evaluate_bridges"),
    ("text", "exact", "Cannot score the 'text' format"),
    ("completion", "exact", r"needs the column\(s\) \['prompt', 'completion'\]"),
])
def test_what_cannot_be_scored_is_a_clear_error(run, format, metric, message):
    model, tokenizer, _ = load_trained(run["bridges"])
    data = str(run["chat"])  # chat rows: no prompt/completion columns
    with pytest.raises(ValueError, match=message):
        score_model(model, tokenizer, data, format, metric)
