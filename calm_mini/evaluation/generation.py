"""Greedy generation in batches, exact match of the answers, and prompts in a chat template.

Works with any model that has a Hugging Face–style ``generate`` — a base model or the composed
CALM model — because it only calls
``model.generate(input_ids, attention_mask=..., max_new_tokens=..., do_sample=False,
pad_token_id=..., eos_token_id=...)``.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..training.batching import left_pad


def _decode_until_eos(new_tokens: list[list[int]], tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Decode generated token lists, each cut at its first EOS or pad."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    answers = []
    for row in new_tokens:
        end = next((i for i, t in enumerate(row) if t in stops), len(row))
        answers.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    return answers


@torch.no_grad()
def greedy_tokens(model, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int,
                  batch_size: int = 64, add_special_tokens: bool = True) -> list[list[int]]:
    """Greedy continuations of ``prompts``, batched with left padding, as token lists cut after
    the first end token (kept) or at ``max_new_tokens``. The model is put in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    eos, out = tokenizer.eos_token_id, []
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = tokenizer(prompts[start : start + batch_size], add_special_tokens=add_special_tokens)["input_ids"]
            ids, mask = left_pad(encoded, tokenizer.pad_token_id)
            new = model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            out += [row[: row.index(eos) + 1] if eos in row else row for row in new[:, ids.shape[1] :].tolist()]
    finally:
        model.train(was_training)
    return out


def generate_answers(model, tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch_size: int = 64,
                     max_new_tokens: int = 8, add_special_tokens: bool = True) -> list[str]:
    """Greedy answers to ``prompts`` as text, each cut at its first end or pad token."""
    tokens = greedy_tokens(model, tokenizer, prompts, max_new_tokens, batch_size, add_special_tokens)
    return _decode_until_eos(tokens, tokenizer)


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


def chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> str:
    """``messages`` rendered with the tokenizer's chat template, ending with the generation prompt
    (tokenise it with ``add_special_tokens=False``: the template writes its own)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def cut_at_turn_end(tokenizer: PreTrainedTokenizerBase, answer: str) -> str:
    """``answer`` up to the text the chat template writes after an assistant message (e.g.
    ``<|im_end|>``), for tokenizers whose end of turn is not their EOS token."""
    marker = "\x00answer\x00"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
                                             tokenize=False)
    end = rendered.split(marker, 1)[1].strip() if marker in rendered else ""
    return answer.split(end, 1)[0] if end else answer
