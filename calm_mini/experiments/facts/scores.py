"""How the facts demo scores a model: teacher-forced value accuracy, greedy chat answers, and
the anchor's ordinary answers beside the composite's."""

from __future__ import annotations

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...core import positions_from_mask
from ...crosstok.model import common_prefix
from ...evaluation import generate_answers, greedy_tokens
from .bridges import encode_chat


@torch.no_grad()
def target_accuracy(model, tokenizer: PreTrainedTokenizerBase, contexts: list[str], targets: list[str],
                    batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced accuracy of ``targets`` after ``contexts`` (e.g. chat prompt + "Orlen Vask
    was born in" → " Tavrik."): ``token`` = % of target tokens that are the greedy choice,
    ``all`` = % of rows whose every target token is (what greedy decoding would write).

    Works for a plain causal LM and a composed model alike.
    """
    hits = tokens = whole = 0
    for start in range(0, len(contexts), batch_size):
        data = encode_chat(contexts[start:start + batch_size], targets[start:start + batch_size], tokenizer,
                           ended=[False] * len(contexts[start:start + batch_size]))
        labels = data["labels"]  # (B, W), W = longest target + 1
        mask = data["attention_mask"]
        positions = positions_from_mask(mask, 0, mask.shape[1], mask.device)
        logits = model(data["input_ids"], attention_mask=mask, position_ids=positions,
                       logits_to_keep=labels.shape[1]).logits  # (B, W, V)
        predicted, wanted = logits[:, :-1].argmax(-1), labels[:, 1:]  # position t predicts t+1
        scored = wanted != -100
        correct = (predicted == wanted) & scored
        hits += correct.sum().item()
        tokens += scored.sum().item()
        whole += (correct | ~scored).all(-1).sum().item()
    return {"token": round(100 * hits / tokens, 1), "all": round(100 * whole / len(contexts), 1)}


def answer_scores(model, tokenizer: PreTrainedTokenizerBase, questions: Dataset, batch_size: int = 32,
                  examples: int = 3) -> dict:
    """Greedy chat answers to ``questions`` (from :func:`calm_mini.data.facts.chat_splits`):
    ``exact`` = % equal to the canonical answer, ``value`` = % that contain the right value,
    ``examples`` = the first few (question, answer, expected)."""
    longest = max(len(t) for t in tokenizer(list(questions["answer"]), add_special_tokens=False)["input_ids"])
    said = generate_answers(model, tokenizer, list(questions["prompt"]), batch_size, longest + 2)
    said = [s.strip() for s in said]
    exact = sum(s == a for s, a in zip(said, questions["answer"]))
    value = sum(f" {v}." in f" {s}" or f" {v} " in f" {s} " for s, v in zip(said, questions["value"]))
    shown = [{"question": q, "answer": s, "expected": a}
             for q, s, a in zip(questions["question"][:examples], said, questions["answer"][:examples])]
    n = len(questions)
    return {"exact": round(100 * exact / n, 1), "value": round(100 * value / n, 1), "examples": shown}


def compare_ordinary(anchor, composite, tokenizer: PreTrainedTokenizerBase, prompts: list[str], questions: list[str],
                     max_new_tokens: int, batch_size: int = 32) -> dict:
    """The anchor's and the composite's greedy answers to ordinary prompts, side by side.

    ``identical`` = how many are token for token the same; ``agreement`` = % of the anchor's
    tokens that the composite reproduces before the two first differ.
    """
    alone = greedy_tokens(anchor, tokenizer, prompts, max_new_tokens, batch_size, add_special_tokens=False)
    together = greedy_tokens(composite, tokenizer, prompts, max_new_tokens, batch_size, add_special_tokens=False)
    rows, agreed, total = [], 0, 0
    for q, a, c in zip(questions, alone, together):
        common = common_prefix(a, c)
        agreed, total = agreed + common, total + len(a)
        rows.append({"prompt": q, "anchor": tokenizer.decode(a, skip_special_tokens=True),
                     "composite": tokenizer.decode(c, skip_special_tokens=True), "identical": a == c})
    return {"identical": sum(r["identical"] for r in rows), "of": len(rows),
            "agreement": round(100 * agreed / total, 1), "answers": rows}


def chat_table(models: dict[str, nn.Module], tokenizer: PreTrainedTokenizerBase, questions: Dataset,
               batch_size: int = 32) -> dict[str, dict]:
    """Per model: exact answers and value hits (generated), and teacher-forced value accuracy
    after the canonical answer's prefix (``value_token``, ``value_all``), all in %."""
    contexts = [p + x for p, x in zip(questions["prompt"], questions["prefix"])]
    targets = [f" {v}." for v in questions["value"]]
    table = {}
    for name, model in models.items():
        forced = target_accuracy(model, tokenizer, contexts, targets, batch_size)
        table[name] = {**answer_scores(model, tokenizer, questions, batch_size),
                       "value_token": forced["token"], "value_all": forced["all"]}
    return table
