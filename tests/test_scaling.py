"""Scaling options: gradient checkpointing through the anchor, bf16 autocast, compiled bridges,
length bucketing. Each must leave the numbers as they were (or within bf16 rounding) and
actually change what it claims to change (memory kept for backward, padding, kernels)."""

import pytest
import torch

from calm_mini import EMBEDDINGS, compose
from calm_mini.training import TrainConfig, batch_indices, train, trim_padding
from conftest import VOCAB, make_pair, randomise_bridges

LAYER_SPECS = {"paper": 1, "embeddings": [(0, EMBEDDINGS), (1, 2)]}


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while ``fn`` runs."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def bridge_grads(model, ids, labels):
    model.zero_grad(set_to_none=True)
    model(ids, labels=labels).loss.backward()
    return [p.grad.clone() for p in model.bridge_parameters()]


@pytest.mark.parametrize("spec", sorted(LAYER_SPECS))
@pytest.mark.parametrize("pair_name", ["llama<-gpt2", "gemma<-qwen2", "gpt2<-gpt_neox"])
def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_less(pair_name, spec, ids):
    anchor, augmenting = make_pair(pair_name)
    model = randomise_bridges(compose(anchor, augmenting, layers=LAYER_SPECS[spec])).train()
    plain = bridge_grads(model, ids, ids)
    plain_bytes = saved_bytes(lambda: model(ids, labels=ids).loss)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed = bridge_grads(model, ids, ids)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(plain, checkpointed))
    assert saved_bytes(lambda: model(ids, labels=ids).loss) < 0.8 * plain_bytes
    assert all("forward" not in layer.__dict__ for layer in model.anchor_layers)  # the patch is undone


def test_gradient_checkpointing_is_idle_outside_training(ids):
    anchor, augmenting = make_pair("llama<-gpt2")
    model = randomise_bridges(compose(anchor, augmenting, layers=1))
    model.gradient_checkpointing_enable()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    model.gradient_checkpointing_disable()
    expected = model.generate(ids, **kwargs)
    model.gradient_checkpointing_enable()
    model.train()  # generate runs without grad: nothing to checkpoint
    assert torch.equal(model.generate(ids, **kwargs), expected)


def composed_task(seed: int = 0):
    anchor, augmenting = make_pair("llama<-gpt2")
    torch.manual_seed(seed)
    model = compose(anchor, augmenting, layers=1)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (32, 10), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate(torch.randint(3, 11, (32,), generator=generator)):
        mask[row, length:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return model, {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


CFG = TrainConfig(steps=8, batch_size=8, lr=3e-3, warmup_steps=2, log_every=2)


def test_bf16_autocast_trains_float32_bridges_close_to_float32_training():
    model32, data = composed_task()
    log32 = train(model32, data, CFG, progress=False)
    model16, _ = composed_task()
    log16 = train(model16, data, TrainConfig(**{**CFG.__dict__, "precision": "bf16"}), progress=False)
    assert all(p.dtype == torch.float32 for p in model16.bridge_parameters())
    losses32, losses16 = [e["loss"] for e in log32], [e["loss"] for e in log16]
    assert losses32 != losses16  # autocast really ran in bf16
    assert all(abs(a - b) < 0.05 for a, b in zip(losses32, losses16))


class Bare(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))


def test_bad_speed_options_are_refused():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    _, data = composed_task()
    with pytest.raises(ValueError, match="gradient_checkpointing_enable"):
        train(Bare(), data, TrainConfig(steps=1, batch_size=4, gradient_checkpointing=True), progress=False)


def test_a_checkpoint_resumes_with_gradient_checkpointing_turned_on(tmp_path):
    whole, data = composed_task()
    train(whole, data, CFG, progress=False)
    first, _ = composed_task()
    train(first, data, TrainConfig(**{**CFG.__dict__, "steps": CFG.steps}), output_dir=tmp_path, progress=False)
    assert (tmp_path / "latest.json").exists()
    resumed, _ = composed_task()
    more = TrainConfig(**{**CFG.__dict__, "gradient_checkpointing": True})
    assert train(resumed, data, more, output_dir=tmp_path, progress=False)[-1]["step"] == CFG.steps
    assert resumed.is_gradient_checkpointing
    for a, b in zip(whole.bridge_parameters(), resumed.bridge_parameters()):
        assert torch.equal(a, b)


def test_bucketing_groups_similar_lengths_and_still_visits_every_example_once_per_epoch():
    lengths = torch.randint(1, 100, (400,), generator=torch.Generator().manual_seed(0))
    stream = batch_indices(400, 10, seed=3, lengths=lengths, window=10)
    epoch = [next(stream) for _ in range(40)]
    assert sorted(torch.cat(epoch).tolist()) == list(range(400))
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in epoch) / len(epoch)
    random_stream = batch_indices(400, 10, seed=3)
    random_spread = sum(int(lengths[b].max() - lengths[b].min()) for b in (next(random_stream) for _ in range(40))) / 40
    assert spread < 0.3 * random_spread
    again = batch_indices(400, 10, seed=3, lengths=lengths, window=10)
    assert all(torch.equal(a, next(again)) for a in epoch)  # deterministic, so resume can replay it


def test_trimming_padding_changes_no_loss():
    model, data = composed_task()
    randomise_bridges(model)
    batch = {k: v[:4] for k, v in data.items()}
    batch["attention_mask"][:, 7:] = 0
    batch["labels"] = batch["labels"].masked_fill(batch["attention_mask"] == 0, -100)
    trimmed = trim_padding(batch)
    assert trimmed["input_ids"].shape[1] == 7 and trimmed["labels"].shape[1] == 7
    with torch.no_grad():
        assert torch.allclose(model(**batch).loss, model(**trimmed).loss, atol=1e-6)


def test_bucketed_training_runs_and_lowers_the_loss():
    model, data = composed_task()
    log = train(model, data, TrainConfig(steps=30, batch_size=8, lr=1e-2, warmup_steps=3, log_every=10,
                                         bucket_by_length=True), progress=False)
    assert log[-1]["loss"] < log[0]["loss"]


def test_compiled_bridges_compute_the_same(ids):
    anchor, augmenting = make_pair("llama<-gpt2")
    model = randomise_bridges(compose(anchor, augmenting, layers=1))
    with torch.no_grad():
        expected = model(ids).logits
        model.compile_bridges(backend="aot_eager")  # the inductor backend needs a C compiler; same graph capture
        assert torch.allclose(model(ids).logits, expected, atol=1e-5)
    model.train()
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.bridge_parameters())
