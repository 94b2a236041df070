"""``python -m calm_mini train / evaluate / generate`` on tiny Llamas saved to folders (a character
tokenizer with a ChatML template beside each), offline: from an empty folder to a score and a
continuation; an interrupted run resumes to bit-identical bridges; models of different
vocabularies compose across tokenizers; and every bad input is exit code 2 with a message
that names the fix, leaving nothing in the output folder."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from calm_mini.cli import main
from calm_mini.crosstok import char_tokenizer
from calm_mini.crosstok.chars import DEFAULT_ALPHABET
from calm_mini.evaluation import chrf, generate_text
from calm_mini.models import llama_config
from calm_mini.training.run import load_trained, train_bridges

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PEOPLE = [("Orlen", "Tavrik"), ("Mira", "Gifu"), ("Ada", "Tavrik"), ("Bo", "Gifu")]
SMALL = ["--layers", "2", "--batch-size", "2", "--threads", "1", "--quiet"]


def save_tiny(folder: Path, tokenizer, hidden: int = 32, layers: int = 4, seed: int = 0) -> Path:
    tokenizer.chat_template = CHATML
    config = llama_config(len(tokenizer), hidden, layers, 4, 2 * hidden, max_positions=256, tokenizer=tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own")
    chat = [{"messages": [{"role": "user", "content": f"Where was {n} born?"}, {"role": "assistant", "content": c}]}
            for n, c in PEOPLE]
    return {
        "anchor": save_tiny(root / "anchor", char_tokenizer(), seed=1),
        "augmenting": save_tiny(root / "augmenting", char_tokenizer(), seed=2),
        # the same characters in another order: another vocabulary, so the cross-tokenizer path
        "other_vocab": save_tiny(root / "other_vocab", char_tokenizer(DEFAULT_ALPHABET[::-1]), seed=3),
        "narrow": save_tiny(root / "narrow", char_tokenizer(), hidden=16, layers=2, seed=4),
        "chat": write_jsonl(root / "chat.jsonl", chat),
        "completion": write_jsonl(root / "completion.jsonl",
                                  [{"prompt": f"{n} was born in", "completion": f" {c}."} for n, c in PEOPLE]),
        "no_assistant": write_jsonl(root / "no_assistant.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]),
        "empty": write_jsonl(root / "empty.jsonl", []),
    }


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory) -> Path:
    """Bridges trained in this process for two steps (for the tests of bad input)."""
    out = tmp_path_factory.mktemp("trained") / "bridges"
    train_bridges(str(world["anchor"]), str(world["augmenting"]), str(world["chat"]), "chat", out, layers=2, steps=2,
                  batch_size=2, max_length=128, checkpoint_every=0, progress=False)
    return out


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, "-m", "calm_mini", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_evaluate_generate_from_an_empty_folder(world, tmp_path):
    out = tmp_path / "bridges"
    done = cli("train", "--anchor", world["anchor"], "--augmenting", world["augmenting"], "--data", world["chat"],
               "--format", "chat", "--steps", 6, "--max-length", 128, "--eval-data", world["chat"], "--eval-every", 3, "--output", out,
               *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 steps, final loss" in done.stdout and "validation loss" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "bridges.safetensors", "calm_config.json", "calm_train.json", "checkpoints"]
    run = json.loads((out / "calm_train.json").read_text())
    assert run["args"]["anchor"] == str(world["anchor"]) and run["args"]["format"] == "chat"
    assert run["report"]["steps"] == 6 and run["report"]["eval_loss"] > 0
    assert run["report"]["layer_map"] == [[1, 1], [3, 3]]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: calm_mini")
    for part in ("| 0 | 1 | 1 |", "| 1 | 3 | 3 |", "format `chat`: 4 examples", "final validation loss", "anchor (m_B)"):
        assert part in card
    assert str(world["anchor"].parent) not in card, "a card is published: no local paths"

    score_file = tmp_path / "score.json"
    done = cli("evaluate", "--bridges", out, "--data", world["chat"], "--format", "chat", "--metric", "chrf",
               "--max-new-tokens", 6, "--json", score_file, "--threads", 1, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(score_file.read_text())
    assert f"chrf: {result['score']:.2f} on 4 examples" in done.stdout
    assert result["score"] == pytest.approx(chrf(result["predictions"], [c for _, c in PEOPLE]))

    done = cli("generate", "--bridges", out, "--prompt", "Where was Orlen born?", "--max-new-tokens", 6,
               "--threads", 1, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == result["predictions"][0] + "\n", "generate renders the prompt as evaluate does"


def test_an_interrupted_run_resumes_to_bit_identical_bridges(world, tmp_path):
    run = ["train", "--anchor", world["anchor"], "--augmenting", world["augmenting"], "--data", world["completion"],
           "--format", "completion", "--steps", 8, "--checkpoint-every", 2, "--max-length", 128, "--lr", "0.01", *SMALL]
    first = cli(*run, "--output", tmp_path / "split", "--stop-at", 4, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stopped at step 4 of 8" in first.stdout
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["checkpoints"], "no bridges before the end"
    assert json.loads((tmp_path / "split/checkpoints/latest.json").read_text()) == {"checkpoint": "checkpoint-000004"}
    for output in ("split", "whole"):
        done = cli(*run, "--output", tmp_path / output, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    resumed, whole = (load_file(tmp_path / o / "bridges.safetensors") for o in ("split", "whole"))
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert (tmp_path / "split/bridges.safetensors").read_bytes() == (tmp_path / "whole/bridges.safetensors").read_bytes()
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in whole.items() if k.endswith("out.weight")), "trained"


def test_models_with_different_vocabularies_compose_across_tokenizers(world, tmp_path):
    out = tmp_path / "bridges"
    report = train_bridges(str(world["anchor"]), str(world["other_vocab"]), str(world["chat"]), "chat", out, layers=2,
                           steps=2, batch_size=2, max_length=128, progress=False)
    assert report["variant"] == "cross_tokenizer"
    model, _, args = load_trained(out)
    assert type(model).__name__ == "CrossTokenizerModel" and args["augmenting"] == str(world["other_vocab"])
    assert isinstance(generate_text(out, "Where was Mira born?", max_new_tokens=3), str)
    with pytest.raises(ValueError, match="augmenting tokenizer .* is not the one the bridges were trained with"):
        load_trained(out, augmenting=str(world["augmenting"]))


def _train_args(world, out, **changes):
    args = {"--anchor": world["anchor"], "--augmenting": world["augmenting"], "--data": world["chat"],
            "--format": "chat", "--steps": 2, "--max-length": 128, "--output": out}
    args.update(changes)
    return ["train", *[str(x) for kv in args.items() for x in kv], *SMALL]


BAD_TRAINING = {
    "data file missing": ({"--data": "missing.jsonl"}, "does not exist"),
    "missing column": ({"--data": "completion"}, r"needs the column\(s\) \['messages'\]"),
    "empty dataset": ({"--data": "empty"}, "is empty: it needs at least one example"),
    "every example too long": ({"--max-length": 8}, "No example has a token to learn within max_length=8: raise"),
    "no assistant turn": ({"--data": "no_assistant"}, "has no assistant turn"),
    "unknown format": ({"--format": "xml"}, "Unknown data format 'xml': choose one of text, completion, chat"),
    "model folder missing": ({"--anchor": "./no/such/model"}, "does not exist: pass a folder saved with save_pretrained"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINING))
def test_bad_training_input_is_a_clear_error_and_writes_nothing(case, world, tmp_path, capsys):
    changes, message = BAD_TRAINING[case]
    changes = {k: world.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(_train_args(world, out, **changes))
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("option, name, message", [
    ("--anchor", "someone/not-downloaded", "is not a local folder, and the Hugging Face hub cannot be reached"),
    ("--data", "someone/some-dataset", "the dataset hub cannot be reached .* pass a local path"),
])
def test_hub_names_offline_say_so_and_how_to_pass_a_local_path(option, name, message, world, tmp_path):
    out = tmp_path / "out"
    done = cli(*_train_args(world, out, **{option: name}), cwd=tmp_path)
    assert done.returncode == 2
    assert re.search(message, done.stderr), done.stderr[-2000:]
    assert not out.exists()


def test_checkpoints_of_another_run_are_refused(world, trained, capsys):
    before = sorted(p.relative_to(trained) for p in trained.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        main(_train_args(world, trained, **{"--data": world["completion"], "--format": "completion"}))
    assert exit_.value.code == 2
    assert "holds the checkpoints of another run" in capsys.readouterr().err
    assert sorted(p.relative_to(trained) for p in trained.rglob("*")) == before


@pytest.mark.parametrize("case", ["unknown metric", "text has no answers", "other models", "not a bridges folder"])
def test_bad_evaluation_input_is_a_clear_error_and_writes_nothing(case, world, trained, tmp_path, capsys):
    score = tmp_path / "out" / "score.json"
    args = {"--bridges": trained, "--data": world["chat"], "--format": "chat", "--metric": "exact", "--json": score}
    message = {"unknown metric": "Unknown metric 'bleu': choose one of exact, chrf, chrf\\+\\+, pass@1",
               "text has no answers": "Cannot score the 'text' format",
               "other models": "does not fit the saved bridges .* pass those models with --anchor and --augmenting",
               "not a bridges folder": "has no calm_config.json"}[case]
    if case == "unknown metric":
        args["--metric"] = "bleu"
    elif case == "text has no answers":
        args["--format"] = "text"
    elif case == "other models":
        args["--anchor"] = world["narrow"]
    else:
        args["--bridges"] = world["anchor"]
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", *[str(x) for kv in args.items() for x in kv]])
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not score.parent.exists()


def test_pass_at_1_runs_prompt_and_completion_or_the_chat_answers_code(world, trained, tmp_path, monkeypatch):
    """The wiring of evaluate's pass@1, with the model's answers fixed: a right and a wrong one."""
    import calm_mini.evaluation.run as run

    answers = {"completion": ["    return a + b\n", "    return a - b\n"],
               "chat": ["Here:\n```python\ndef add(a, b):\n    return a + b\n```\n", "def add(a, b):\n    return 0\n"]}
    tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    rows = {"completion": [{"prompt": "def add(a, b):\n", "tests": tests, "entry_point": "add"}] * 2,
            "chat": [{"messages": [{"role": "user", "content": "add?"}, {"role": "assistant", "content": "…"}],
                      "tests": ["assert add(2, 3) == 5", "assert add(0, 0) == 0"]}] * 2}
    for format in ("completion", "chat"):
        monkeypatch.setattr(run, "generate_answers", lambda *args, format=format, **kwargs: answers[format])
        data = write_jsonl(tmp_path / f"{format}.jsonl", rows[format])
        result = run.evaluate_bridges(trained, str(data), format, "pass@1", timeout=20)
        assert (result["score"], result["status"]) == (0.5, ["passed", "failed"]), format
