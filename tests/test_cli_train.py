"""``python -m calm_mini train / evaluate / generate`` on tiny Llamas saved to folders (a character
tokenizer with a ChatML template beside each), offline: from an empty folder to a score and a
continuation; a run stopped early or by Ctrl-C resumes to bit-identical bridges; batches carry
no padding beyond their longest row; two processes (DDP) train what one does; models of
different vocabularies compose across tokenizers; --push-to-hub uploads the bridges and the card;
and every bad input is exit code 2 with a message that names the fix, leaving nothing in the
output folder."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from calm_mini.cli import main
from calm_mini.core import ComposedModel
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


CLI_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calm_mini", *map(str, args)], cwd=cwd, env=CLI_ENV,
                          capture_output=True, text=True, timeout=300)


def test_train_evaluate_generate_from_an_empty_folder(world, tmp_path):
    out = tmp_path / "bridges"
    done = cli("train", "--anchor", world["anchor"], "--augmenting", world["augmenting"], "--data", world["chat"],
               "--format", "chat", "--steps", 6, "--max-length", 128, "--eval-data", world["chat"], "--eval-every", 3, "--eval-metric", "chrf", "--output", out,
               *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 steps, final loss" in done.stdout and "validation loss" in done.stdout
    assert done.stdout.count("validation chrf") == 2, "the task metric at steps 3 and 6"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "bridges.safetensors", "calm_config.json", "calm_train.json", "checkpoints"]
    run = json.loads((out / "calm_train.json").read_text())
    assert run["args"]["anchor"] == str(world["anchor"]) and run["args"]["format"] == "chat"
    assert run["report"]["steps"] == 6 and run["report"]["eval_loss"] > 0
    assert [e["step"] for e in run["log"] if "eval_chrf" in e] == [3, 6]
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


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes_to_bit_identical_bridges(world, tmp_path):
    """A real interrupt: SIGINT (what Ctrl-C sends) once a checkpoint exists. Polls the folder
    instead of sleeping, so it holds on a slow or loaded machine."""
    run = ["train", "--anchor", world["anchor"], "--augmenting", world["augmenting"], "--data", world["completion"],
           "--format", "completion", "--steps", 300, "--checkpoint-every", 2, "--max-length", 128, "--lr", "0.01",
           *SMALL]
    broken = tmp_path / "broken"
    log = tmp_path / "interrupted.log"
    with log.open("w") as out:
        # The test process may ignore SIGINT (a shell's background job does; so may a library), and a
        # child inherits an ignored signal: restore the default, so the child's Python turns SIGINT into
        # KeyboardInterrupt as at a terminal.
        process = subprocess.Popen([sys.executable, "-m", "calm_mini", *map(str, run), "--output", str(broken)],
                                   cwd=tmp_path, env=CLI_ENV, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 300
            while not (broken / "checkpoints" / "latest.json").exists():
                assert process.poll() is None, f"it ended before its first checkpoint:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
    text = log.read_text()
    assert code == 130, f"exit code {code}, expected 130 (interrupted); raise --steps if it had finished:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    leftovers = [p for p in broken.rglob("*") if p.name.startswith(".")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    assert not (broken / "calm_train.json").exists(), "calm_train.json marks a finished run"
    latest = json.loads((broken / "checkpoints" / "latest.json").read_text())["checkpoint"]
    assert sorted(p.name for p in (broken / "checkpoints" / latest).iterdir()) == [
        "optimizer.safetensors", "trainable.safetensors", "trainer_state.json"]
    stopped = json.loads((broken / "checkpoints" / latest / "trainer_state.json").read_text())["step"]
    assert 2 <= stopped < 300
    assert text.strip().splitlines()[-1] == (f"interrupted: the checkpoint of step {stopped} in {broken / 'checkpoints'} "
                                             "is complete; run the same command to resume.")

    for output in (broken, tmp_path / "whole"):
        done = cli(*run, "--output", output, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    resumed, whole = (load_file(o / "bridges.safetensors") for o in (broken, tmp_path / "whole"))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert json.loads((broken / "calm_train.json").read_text())["report"]["steps"] == 300


@pytest.mark.parametrize("bucket_by_length", [False, True])
def test_every_batch_is_cut_to_its_own_longest_row(bucket_by_length, world, tmp_path, monkeypatch):
    """Two short rows and two long ones: a batch of short rows carries no padding up to the long
    ones; with length buckets, no batch mixes them (so no padding at all)."""
    rows = [{"prompt": "a" * k, "completion": " b."} for k in (4, 40, 4, 40)]
    data = write_jsonl(tmp_path / "lengths.jsonl", rows)
    masks = []
    forward = ComposedModel.forward

    def spy(self, input_ids, attention_mask=None, **kwargs):
        masks.append(attention_mask.clone())
        return forward(self, input_ids, attention_mask, **kwargs)

    monkeypatch.setattr(ComposedModel, "forward", spy)
    train_bridges(str(world["anchor"]), str(world["augmenting"]), str(data), "completion", tmp_path / "out", layers=2,
                  steps=6, batch_size=2, max_length=128, checkpoint_every=0, progress=False,
                  bucket_by_length=bucket_by_length)
    assert len(masks) == 6
    assert all(mask[:, -1].any() for mask in masks), "a batch was padded beyond its longest row"
    assert any(mask.shape[1] < 40 for mask in masks), "a batch of short rows is short"
    padding = sum(int((mask == 0).sum()) for mask in masks)
    assert (padding == 0) == bucket_by_length


def test_the_training_loss_is_the_models_own_on_labelled_positions_only():
    """LabelledRows skips the output layer on prompts and padding but computes the same loss."""
    from calm_mini import compose
    from calm_mini.models import tiny
    from calm_mini.training.targets import LabelledRows

    torch.manual_seed(0)
    model = compose(tiny("llama", hidden_size=32, num_layers=4, vocab_size=100),
                    tiny("llama", hidden_size=32, num_layers=4, vocab_size=100, seed=1), layers=2)
    for bridge in model.bridges:
        torch.nn.init.normal_(bridge.out.weight, 0, 0.1)  # W^O starts at zero: make the bridges matter
    ids = torch.randint(3, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 7:], mask[1, 10:], mask[2, 11:] = 0, 0, 0  # right padding; no row reaches the last column
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # a prompt
    expected = model(ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(LabelledRows(model)(ids, mask, labels).loss, expected, rtol=1e-6, atol=1e-6)


def test_push_to_hub_uploads_the_bridges_and_the_card_without_checkpoints(world, tmp_path, monkeypatch, capsys):
    """``--push-to-hub`` with huggingface_hub.HfApi replaced (no network): what would be uploaded,
    filtered with huggingface_hub's own pattern matching."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["create_repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, folder_path, repo_id, ignore_patterns=None, commit_message=None):
            files = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
            calls["uploaded"] = sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns))
            calls["folder"], calls["repo_id"] = Path(folder_path), repo_id
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc", commit_message="",
                                              commit_description="", oid="abc")

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "bridges"
    main(_train_args(world, out, **{"--push-to-hub": "someone/my-bridges"}))
    assert calls["create_repo"] == ("someone/my-bridges", False, True)
    assert calls["folder"] == out and calls["repo_id"] == "someone/my-bridges"
    assert calls["uploaded"] == ["README.md", "bridges.safetensors", "calm_config.json", "calm_train.json"]
    assert (out / "checkpoints").is_dir(), "the checkpoints stay local"
    assert "pushed to https://huggingface.co/someone/my-bridges/commit/abc" in capsys.readouterr().out


ACCELERATE = Path(sys.executable).with_name("accelerate")


@pytest.mark.skipif(not ACCELERATE.exists(), reason="the accelerate CLI is not installed next to this Python")
def test_two_processes_train_the_bridges_of_one_and_only_the_main_one_writes(world, tmp_path):
    """``accelerate launch`` (DDP, gloo on CPU) of the same command: with every completion of one
    length, the mean over each process's half of a batch averages to the mean over the batch, so
    two processes train what one does (to float rounding); the folder is written once."""
    rows = [{"prompt": f"{n} was born in", "completion": f" {c[:4]}."} for n, c in PEOPLE]
    data = write_jsonl(tmp_path / "same_length.jsonl", rows)
    run = ["train", "--anchor", world["anchor"], "--augmenting", world["augmenting"], "--data", data,
           "--format", "completion", "--steps", 4, "--checkpoint-every", 2, "--max-length", 128, "--lr", "0.01", *SMALL]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "calm_mini"]
    env = {**CLI_ENV, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*launch, *map(str, run), "--output", str(tmp_path / "two")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("4 steps, final loss") == 1, two.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "README.md", "bridges.safetensors", "calm_config.json", "calm_train.json", "checkpoints"]
    one = cli(*run, "--output", tmp_path / "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (load_file(tmp_path / o / "bridges.safetensors") for o in ("two", "one"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=2e-5) for k in a)
    logs = [json.loads((tmp_path / o / "calm_train.json").read_text())["log"] for o in ("two", "one")]
    assert [e["loss"] for e in logs[0]] == pytest.approx([e["loss"] for e in logs[1]], rel=1e-5)
    assert any(v.abs().sum() > 0 for k, v in a.items() if k.endswith("out.weight")), "trained"


def test_explicit_pairs_bridge_options_and_cached_features_train_the_same_bridges(world, tmp_path):
    """``--layers 1:2,3:3 --recency-bias --normalize-inputs`` reach the saved bridges, and
    ``--cache-features`` (the anchor below the lowest bridge computed once) trains the same
    bridges as the full forward, to float rounding."""
    common = ["train", "--anchor", world["anchor"], "--augmenting", world["augmenting"], "--data", world["completion"],
              "--format", "completion", "--steps", 4, "--max-length", 128, "--lr", "0.01", "--layers", "1:2,3:3",
              "--recency-bias", "--normalize-inputs", "--batch-size", 2, "--threads", 1, "--quiet"]
    for name, extra in (("full", []), ("cached", ["--cache-features"])):
        done = cli(*common, *extra, "--output", tmp_path / name, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "cached/calm_config.json").read_text())
    assert config["recency_bias"] and config["normalize_inputs"]
    assert json.loads((tmp_path / "cached/calm_train.json").read_text())["report"]["layer_map"] == [[1, 2], [3, 3]]
    full, cached = (load_file(tmp_path / n / "bridges.safetensors") for n in ("full", "cached"))
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in full.items() if k.endswith("out.weight")), "trained"
    for key in full:
        torch.testing.assert_close(cached[key], full[key], atol=1e-4, rtol=1e-3)  # AdamW amplifies rounding
    model, _, _ = load_trained(tmp_path / "cached")
    assert model.calm_config.recency_bias and [list(p) for p in model.calm_config.layer_maps[0].pairs] == [[1, 2], [3, 3]]


def test_layers_must_be_a_number_or_pairs(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--anchor", str(world["anchor"]), "--augmenting", str(world["augmenting"]), "--data",
              str(world["chat"]), "--format", "chat", "--output", str(tmp_path / "out"), "--layers", "1-27"])
    assert exit_.value.code == 2 and "pairs like 1:27,1:29" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
