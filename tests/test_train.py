"""The bridge training loop: it learns, it resumes exactly, its checkpoints are atomic and
checked; and the bridges also train with the Hugging Face Trainer."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from calm_mini import Evenly, compose
from calm_mini.training import TrainConfig, train
from conftest import VOCAB, make_pair

CFG = TrainConfig(steps=12, batch_size=4, lr=3e-3, warmup_steps=3, log_every=2, checkpoint_every=4, seed=1)


def task():
    """Next token = (token + 1) mod V over random sequences: learnable by the bridges."""
    torch.manual_seed(0)
    ids = torch.randint(3, VOCAB - 1, (32, 8))
    ids[:, 1::2] = ids[:, ::2] + 1
    labels = ids.clone()
    labels[:, ::2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def fresh_model():
    """The same composition each time: same base models, same initial bridges."""
    anchor, augmenting = make_pair("llama<-gpt2")
    torch.manual_seed(0)
    return compose(anchor, augmenting, layers=Evenly(2))


class Interrupt:
    """Calls the model, but raises KeyboardInterrupt (like Ctrl-C) on call number ``at``."""

    def __init__(self, model, at):
        self.model, self.at, self.calls = model, at, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, **batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.model(**batch)


def bridge_state(model):
    return {k: v.clone() for k, v in model.bridges.state_dict().items()}


def test_training_lowers_the_loss_and_changes_only_bridges():
    model = fresh_model()
    anchor_before = {k: v.clone() for k, v in model.anchor.state_dict().items()}
    log = train(model, task(), TrainConfig(steps=30, batch_size=8, lr=1e-2, warmup_steps=3, log_every=5), progress=False)
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(torch.equal(v, model.anchor.state_dict()[k]) for k, v in anchor_before.items())


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = fresh_model()
    train(whole, task(), CFG, output_dir=tmp_path / "whole", progress=False)

    broken = fresh_model()
    with pytest.raises(KeyboardInterrupt):
        train(Interrupt(broken, at=7), task(), CFG, output_dir=tmp_path / "broken", progress=False)
    folder = tmp_path / "broken"
    assert json.loads((folder / "latest.json").read_text()) == {"checkpoint": "checkpoint-000004"}
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-000004", "latest.json"]  # nothing half-written

    resumed = fresh_model()  # a new process would start from fresh bridges
    log = train(resumed, task(), CFG, output_dir=folder, progress=False)
    assert [e["step"] for e in log] == list(range(2, 13, 2))
    whole_state, resumed_state = bridge_state(whole), bridge_state(resumed)
    assert all(torch.equal(whole_state[k], resumed_state[k]) for k in whole_state)
    assert not torch.equal(whole_state["0.out.weight"], bridge_state(fresh_model())["0.out.weight"])


def test_bad_checkpoints_are_refused(tmp_path):
    model = fresh_model()
    train(model, task(), CFG, output_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train(fresh_model(), task(), TrainConfig(steps=12, batch_size=4, lr=1e-4), output_dir=tmp_path, progress=False)
    anchor, augmenting = make_pair("llama<-gpt2")
    with pytest.raises(ValueError, match="other trainable parameters"):
        train(compose(anchor, augmenting, layers=[(1, 3)]), task(), CFG, output_dir=tmp_path, progress=False)
    (tmp_path / "checkpoint-000012" / "trainable.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        train(fresh_model(), task(), CFG, output_dir=tmp_path, progress=False)


def test_bad_settings_and_data_are_refused():
    with pytest.raises(ValueError, match="steps must be ≥ 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="one length N"):
        train(fresh_model(), {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.zeros(3, 3)}, CFG)


def test_bridges_train_with_the_hugging_face_trainer(tmp_path):
    model = fresh_model()
    before = bridge_state(model)
    anchor_before = {k: v.clone() for k, v in model.anchor.state_dict().items()}
    dataset = Dataset.from_dict({k: v.tolist() for k, v in task().items()})
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=2,
    )
    result = Trainer(model=model, args=args, train_dataset=dataset).train()
    assert result.global_step == 4
    after = bridge_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(v, model.anchor.state_dict()[k]) for k, v in anchor_before.items())
