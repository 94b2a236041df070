"""Greedy generation in batches, exact match of the answers, prompts in a chat template, and a
model in memory scored on your data (:func:`score_model`).

Works with any model that has a Hugging Face–style ``generate`` — a base model or the composed
CALM model — because it only calls
``model.generate(input_ids, attention_mask=..., max_new_tokens=..., do_sample=False,
pad_token_id=..., eos_token_id=...)``.
"""

from __future__ import annotations

import os

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..training.batching import left_pad
from ..training.data import load_examples
from .metrics import STRING_METRICS


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


def prompts_and_references(dataset: Dataset, format: str, tokenizer: PreTrainedTokenizerBase
                           ) -> tuple[list[str], list[str]]:
    """What a model is asked and what its answer is compared with, for rows in ``format``:
    ``"completion"``: the ``prompt`` and ``completion`` columns as they are; ``"chat"``: each row's
    ``messages`` up to its last assistant turn, rendered with :func:`chat_prompt`, and that turn's
    content.

    Raises:
        ValueError: another format, a missing column, a chat row without an assistant turn, or a
            tokenizer without a chat template for chat rows.
    """
    needed = {"completion": ["prompt", "completion"], "chat": ["messages"]}.get(format)
    if needed is None:
        raise ValueError(f"Cannot score the {format!r} format: answers are compared with references, so use "
                         "'completion' or 'chat'.")
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Scoring the {format!r} format needs the column(s) {missing}; the data has "
                         f"{dataset.column_names}.")
    if format == "completion":
        return list(dataset["prompt"]), list(dataset["completion"])
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("The 'chat' format needs a tokenizer with a chat template (tokenizer.chat_template).")
    prompts, references = [], []
    for messages in dataset["messages"]:
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise ValueError(f"A chat row has no assistant turn, so nothing to compare the answer with: {messages!r}.")
        prompts.append(chat_prompt(tokenizer, messages[:last]))
        references.append(messages[last]["content"])
    return prompts, references


def score_model(model, tokenizer: PreTrainedTokenizerBase, data: Dataset | str | os.PathLike, format: str,
                metric: str = "exact", max_new_tokens: int | None = None, batch_size: int = 16) -> dict:
    """Greedy answers of ``model`` — a base model alone or a composite, in memory — to the rows of
    ``data`` (a ``Dataset`` or a file for :func:`calm_mini.training.data.load_examples`), scored
    with ``metric`` (``"exact"``, ``"chrf"`` or ``"chrf++"``). The prompts are rendered as
    :func:`calm_mini.evaluation.evaluate_bridges` renders them, so an anchor, an augmenting
    model and their composite are scored on the same questions.

    Args:
        max_new_tokens: default: the longest reference in tokens + 1.
    Returns:
        ``metric``, ``score`` (exact in [0, 1], chrF in [0, 100]), ``examples``,
        ``max_new_tokens`` and the ``predictions``.
    Raises:
        ValueError: an unknown metric (pass@1 runs programs: use ``evaluate_bridges``), and the
            errors of :func:`prompts_and_references`.
    """
    if metric not in STRING_METRICS:
        raise ValueError(f"Unknown metric {metric!r} for a model in memory: choose one of {', '.join(STRING_METRICS)} "
                         "(pass@1 executes programs: use calm_mini.evaluation.evaluate_bridges).")
    dataset = data if isinstance(data, Dataset) else load_examples(data)
    prompts, references = prompts_and_references(dataset, format, tokenizer)
    if max_new_tokens is None:
        max_new_tokens = max(len(t) for t in tokenizer(references, add_special_tokens=False)["input_ids"]) + 1
    predictions = generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens,
                                   add_special_tokens=format == "completion")
    if format == "chat":
        predictions = [cut_at_turn_end(tokenizer, p) for p in predictions]
    return {"metric": metric, "score": STRING_METRICS[metric](predictions, references), "examples": len(prompts),
            "max_new_tokens": max_new_tokens, "predictions": predictions}


def validation_metric(data: str | os.PathLike, format: str, metric: str):
    """For ``train_bridges(eval_score=…)``: a callback that scores ``data`` with ``metric``
    (:func:`score_model`) at every validation, prints it and returns ``{"eval_<metric>": score}``."""
    from tqdm.auto import tqdm

    if data is None:
        raise ValueError(f"A validation metric ({metric}) scores validation data: pass it too (--eval-data).")

    def score(model, tokenizer) -> dict[str, float]:
        result = score_model(model, tokenizer, data, format, metric)
        tqdm.write(f"validation {metric} {result['score']:.4f}")
        return {f"eval_{metric}": result["score"]}

    return score
