"""Evaluation: exact match of greedily generated answers.

Works with any model that has a Hugging Face–style ``generate`` — a base model or the composed
CALM model — because it only calls
``model.generate(input_ids, attention_mask=..., max_new_tokens=..., do_sample=False,
pad_token_id=..., eos_token_id=...)``.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists. Returns ``input_ids`` and ``attention_mask``, both (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.tensor(seq)
        mask[i, width - len(seq) :] = 1
    return ids, mask


def _decode_until_eos(new_tokens: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Decode (B, N) generated tokens, each row cut at its first EOS or pad."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    answers = []
    for row in new_tokens.tolist():
        end = next((i for i, t in enumerate(row) if t in stops), len(row))
        answers.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    return answers


@torch.no_grad()
def generate_answers(
    model, tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch_size: int = 64,
    max_new_tokens: int = 8,
) -> list[str]:
    """Greedy answers to ``prompts``, batched with left padding (the tokenizer adds BOS)."""
    was_training = model.training
    model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = tokenizer(prompts[start : start + batch_size])["input_ids"]
            ids, mask = left_pad(encoded, tokenizer.pad_token_id)
            out = model.generate(
                ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )  # (B, T + n_new)
            answers += _decode_until_eos(out[:, ids.shape[1] :].cpu(), tokenizer)
    finally:
        model.train(was_training)
    return answers


def exact_match(
    model, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, batch_size: int = 64,
    max_new_tokens: int | None = None,
) -> float:
    """Fraction of rows whose greedy answer equals the ``answer`` column exactly.

    ``max_new_tokens`` defaults to the longest answer in tokens + 1 (for EOS).
    """
    if max_new_tokens is None:
        lengths = tokenizer(list(dataset["answer"]), add_special_tokens=False)["input_ids"]
        max_new_tokens = max(len(t) for t in lengths) + 1
    prompts = list(dataset["prompt"])
    predictions = generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens)
    hits = sum(p == a for p, a in zip(predictions, dataset["answer"]))
    return hits / len(dataset)
