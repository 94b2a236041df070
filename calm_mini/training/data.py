"""Your own data, as training rows: a Hugging Face ``datasets.Dataset`` from local files (JSON,
JSONL, CSV, Parquet, text) or a hub name, tokenised with batched ``Dataset.map`` in one of
three formats, each with its own loss mask:

* ``"text"``: column ``text``; the loss is on every token;
* ``"completion"``: columns ``prompt`` and ``completion``; the loss is on the completion only;
* ``"chat"``: column ``messages`` (``[{"role": …, "content": …}, …]``) rendered with the
  tokenizer's chat template; the loss is on the assistant turns only.

Rows longer than ``max_length`` are cut (and counted); rows left with nothing to learn are
dropped (and counted). :func:`as_tensors` pads the rows for :func:`calm_mini.training.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from transformers import PreTrainedTokenizerBase

from .batching import pad

FORMATS = ("text", "completion", "chat")
COLUMNS = {"text": ("text",), "completion": ("prompt", "completion"), "chat": ("messages",)}
LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
IGNORE = -100


def load_examples(source: str | Path, split: str = "train") -> Dataset:
    """A dataset from a local file (by its suffix: .json/.jsonl/.csv/.parquet/.txt) or a hub name.

    Raises:
        FileNotFoundError: a path that does not exist.
        ConnectionError: a hub name while offline (pass a local file instead).
        ValueError: an unknown file type, or an empty dataset.
    """
    path = Path(source)
    if path.suffix:
        if not path.is_file():
            raise FileNotFoundError(f"The data file {path} does not exist.")
        if path.suffix.lower() not in LOADERS:
            raise ValueError(f"Cannot read {path.name}: use one of {', '.join(LOADERS)} (or a hub dataset name).")
        if path.stat().st_size == 0:
            raise ValueError(f"The data file {path} is empty: it needs at least one example.")
        try:
            dataset = load_dataset(LOADERS[path.suffix.lower()], data_files=str(path), split="train")
        except Exception as err:  # the loaders raise many kinds (StopIteration, ArrowInvalid, …) on a bad file
            raise ValueError(f"Cannot read {path} as {LOADERS[path.suffix.lower()]}: {type(err).__name__}: {err}") from err
    else:
        try:
            dataset = load_dataset(str(source), split=split)
        except (ConnectionError, OSError) as err:  # offline mode and unreachable hubs both end here
            raise ConnectionError(
                f"{source!r} is not a local file and the dataset hub cannot be reached (offline?): pass a local "
                f"path to a JSON/JSONL/CSV/Parquet/text file instead ({type(err).__name__}: {err})."
            ) from err
    if len(dataset) == 0:
        raise ValueError(f"The dataset {source} is empty: it needs at least one example.")
    return dataset


@dataclass(frozen=True)
class Encoded:
    """Tokenised rows (columns ``input_ids`` and ``labels``, lists of ids; labels -100 where
    there is no loss), and how many rows were cut at ``max_length`` or dropped."""

    rows: Dataset
    truncated: int
    dropped: int


def encode(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, format: str, max_length: int = 1024,
           num_proc: int | None = None) -> Encoded:
    """Tokenise ``dataset`` in ``format`` (see the module docstring) with batched ``Dataset.map``.

    Raises:
        ValueError: an unknown format, a missing column, an empty dataset, a chat row without an
            assistant turn, or every row left with nothing to learn within ``max_length``.
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown data format {format!r}: choose one of {', '.join(FORMATS)}.")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: it needs at least one example.")
    missing = [c for c in COLUMNS[format] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"The {format!r} format needs the column(s) {missing}; the data has {dataset.column_names}.")
    if format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("The 'chat' format needs a tokenizer with a chat template (tokenizer.chat_template).")
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no end-of-sequence token; set tokenizer.eos_token.")
    encoder = {"text": _text_rows, "completion": _completion_rows, "chat": _chat_rows}[format]
    rows = dataset.map(lambda batch: _cut(encoder(batch, tokenizer), max_length), batched=True,
                       remove_columns=dataset.column_names, num_proc=num_proc, desc=f"tokenising ({format})")
    truncated = sum(rows["truncated"])
    kept = rows.filter(lambda row: any(label != IGNORE for label in row["labels"]), desc="dropping empty rows")
    if len(kept) == 0:
        raise ValueError(f"No example has a token to learn within max_length={max_length}: raise max_length "
                         f"or shorten the prompts.")
    return Encoded(kept.remove_columns("truncated"), truncated, len(rows) - len(kept))


def as_tensors(encoded: Encoded, pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` (N, T), padded on ``side`` (labels -100 on padding)."""
    ids, mask = pad(list(encoded.rows["input_ids"]), pad_id, side)
    labels, _ = pad(list(encoded.rows["labels"]), IGNORE, side)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _text_rows(batch: dict, tokenizer) -> dict:
    ids = [row + [tokenizer.eos_token_id] for row in tokenizer(batch["text"])["input_ids"]]
    return {"input_ids": ids, "labels": [list(row) for row in ids]}


def _completion_rows(batch: dict, tokenizer) -> dict:
    prompts = tokenizer(batch["prompt"])["input_ids"]
    completions = tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
    ids = [p + c + [tokenizer.eos_token_id] for p, c in zip(prompts, completions)]
    labels = [[IGNORE] * len(p) + c + [tokenizer.eos_token_id] for p, c in zip(prompts, completions)]
    return {"input_ids": ids, "labels": labels}


def _chat_rows(batch: dict, tokenizer) -> dict:
    """Render each conversation turn by turn: an assistant turn's tokens are what its message adds
    to the conversation rendered up to it with the generation prompt."""
    out = {"input_ids": [], "labels": []}
    for messages in batch["messages"]:
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError(f"A chat row has no assistant turn, so nothing to learn: {messages!r}.")
        ids, labels = [], []
        for i, message in enumerate(messages):
            before = i > 0 and message["role"] == "assistant"
            start = _render(tokenizer, messages[:i], generation_prompt=True) if before else ids
            full = _render(tokenizer, messages[: i + 1])
            if full[: len(start)] != start or full[: len(ids)] != ids:
                raise ValueError("The chat template renders a conversation differently from its beginning, so "
                                 "assistant tokens cannot be told apart; use the 'completion' format instead.")
            labels += [IGNORE] * (len(start) - len(ids))
            labels += full[len(start):] if message["role"] == "assistant" else [IGNORE] * (len(full) - len(start))
            ids = full
        out["input_ids"].append(ids)
        out["labels"].append(labels)
    return out


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    if not messages and not generation_prompt:
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _cut(rows: dict, max_length: int) -> dict:
    """Cut every row to ``max_length`` tokens and mark the ones that were longer."""
    rows["truncated"] = [len(ids) > max_length for ids in rows["input_ids"]]
    rows["input_ids"] = [ids[:max_length] for ids in rows["input_ids"]]
    rows["labels"] = [labels[:max_length] for labels in rows["labels"]]
    return rows
