"""Score trained bridges on your data, or ask them for a continuation: what ``python -m calm_mini
evaluate`` and ``generate`` do. The base models are the ones the folder's ``calm_train.json``
names (:func:`calm_mini.training.run.load_trained`); answers are greedy.

What is scored, by data format:

* ``completion``: the ``prompt`` column → the generated completion, against ``completion``;
* ``chat``: each conversation up to its last assistant turn, rendered with the anchor's chat
  template → the generated turn, against that turn's content.

For ``pass@1`` the program is the prompt followed by the generated completion (HumanEval-style:
the prompt is the function's signature and docstring), or in chat the answer's first fenced
code block (or the whole answer). Its tests are the ``tests`` column (a string, or a list of
lines such as MBPP's ``test_list``), then ``check(<entry_point>)`` when there is an
``entry_point`` column (HumanEval). **pass@1 executes model output** in separate processes (see
:mod:`calm_mini.evaluation.execution` for what is and is not isolated).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TextStreamer

from ..core.files import atomic_write
from ..training.data import load_examples
from ..training.run import load_trained
from .execution import execute
from .generation import chat_prompt, cut_at_turn_end, generate_answers, prompts_and_references
from .metrics import STRING_METRICS

METRICS = (*STRING_METRICS, "pass@1")
SCORED_FORMATS = ("completion", "chat")
FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)(```|$)", re.S)


def evaluate_bridges(bridges: str | os.PathLike, data: str, format: str, metric: str = "exact",
                     anchor: str | None = None, augmenting: str | None = None, max_new_tokens: int | None = None,
                     batch_size: int = 16, timeout: float = 10.0, memory_mb: int = 1024, workers: int = 1,
                     output_json: str | os.PathLike | None = None, device: str | None = None) -> dict:
    """Generate greedily for every prompt of ``data`` with the bridges in ``bridges`` and score the
    answers with ``metric`` (``"exact"``, ``"chrf"``, ``"chrf++"`` or ``"pass@1"``).

    Args:
        anchor, augmenting: base models instead of those named in ``calm_train.json``.
        max_new_tokens: default: the longest reference in tokens + 1 (256 without references).
        timeout, memory_mb, workers: for pass@1, per program (see :func:`.execution.run_program`).
        output_json: also write the result there (atomically).
    Returns:
        ``metric``, ``score`` (exact and pass@1 in [0, 1], chrF in [0, 100]), ``examples``, and
        the ``predictions`` (with pass@1 also each program's ``status``).
    Raises:
        ValueError: an unknown metric or format, a missing column, an empty dataset, a chat row
            without an assistant turn, or base models that do not fit the bridges.
        FileNotFoundError: no such data file or bridges folder.
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}: choose one of {', '.join(METRICS)}.")
    if format not in SCORED_FORMATS:
        raise ValueError(f"Cannot score the {format!r} format: evaluation compares answers to prompts, so use one of "
                         f"{', '.join(SCORED_FORMATS)}.")
    dataset = load_examples(data)
    _check_columns(dataset, format, metric)
    model, tokenizer, _ = load_trained(bridges, anchor, augmenting, device)
    prompts, references = _prompts_and_references(dataset, format, tokenizer)
    if max_new_tokens is None:
        given = [r for r in references if r]
        lengths = [len(t) for t in tokenizer(given, add_special_tokens=False)["input_ids"]] if given else []
        max_new_tokens = max(lengths) + 1 if lengths else 256
    predictions = generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens,
                                   add_special_tokens=format == "completion")
    if format == "chat":
        predictions = [cut_at_turn_end(tokenizer, p) for p in predictions]
    result = {"metric": metric, "examples": len(prompts), "data": str(data), "format": format,
              "bridges": str(bridges), "max_new_tokens": max_new_tokens}
    if metric == "pass@1":
        if format == "completion":
            programs = [p + a for p, a in zip(dataset["prompt"], predictions)]
        else:
            programs = [_code(a) for a in predictions]
        runs = execute(programs, _tests(dataset), timeout, memory_mb, workers)
        result.update(score=sum(r.passed for r in runs) / len(runs), status=[r.status for r in runs])
    else:
        result["score"] = STRING_METRICS[metric](predictions, references)
    result["predictions"] = predictions
    if output_json is not None:
        text = json.dumps(result, indent=2, ensure_ascii=False)
        atomic_write(output_json, lambda path: Path(path).write_text(text, encoding="utf-8"))
    return result


def generate_text(bridges: str | os.PathLike, prompt: str, max_new_tokens: int = 64, anchor: str | None = None,
                  augmenting: str | None = None, device: str | None = None, num_beams: int = 1,
                  sample: bool = False, temperature: float = 1.0, seed: int = 0, stream: bool = False) -> str:
    """The continuation of ``prompt`` by the bridges in ``bridges``: as a user turn in the anchor
    tokenizer's chat template when it has one, else the plain text.

    Greedy by default; ``num_beams`` > 1 for beam search, ``sample`` to sample at ``temperature``
    (seeded by ``seed``); ``stream`` prints the text as it is generated (a ``TextStreamer``).
    """
    model, tokenizer, _ = load_trained(bridges, anchor, augmenting, device)
    chat = bool(getattr(tokenizer, "chat_template", None))
    text = chat_prompt(tokenizer, [{"role": "user", "content": prompt}]) if chat else prompt
    ids = tokenizer(text, add_special_tokens=not chat, return_tensors="pt")["input_ids"].to(model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    torch.manual_seed(seed)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, num_beams=num_beams,
                         do_sample=sample, temperature=temperature if sample else None, streamer=streamer,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return cut_at_turn_end(tokenizer, answer) if chat else answer


# ---------------------------------------------------------------------- helpers
def _check_columns(dataset: Dataset, format: str, metric: str) -> None:
    needed = {"completion": ["prompt"] if metric == "pass@1" else ["prompt", "completion"], "chat": ["messages"]}[format]
    needed += ["tests"] if metric == "pass@1" else []
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Scoring the {format!r} format with {metric} needs the column(s) {missing}; the data has "
                         f"{dataset.column_names}.")


def _prompts_and_references(dataset: Dataset, format: str, tokenizer) -> tuple[list[str], list[str]]:
    if format == "completion" and "completion" not in dataset.column_names:  # pass@1: the tests score the programs
        return list(dataset["prompt"]), [""] * len(dataset)
    return prompts_and_references(dataset, format, tokenizer)


def _tests(dataset: Dataset) -> list[str]:
    tests = [t if isinstance(t, str) else "\n".join(t) for t in dataset["tests"]]
    if "entry_point" in dataset.column_names:
        tests = [f"{t}\n\ncheck({e})" for t, e in zip(tests, dataset["entry_point"])]
    return tests


def _code(answer: str) -> str:
    """The first fenced code block of a chat answer, or the whole answer."""
    match = FENCE.search(answer)
    return match.group(1) if match else answer
