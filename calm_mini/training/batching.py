"""From examples to batches: padding, the ``[BOS] prompt answer [EOS]`` encoding, and the
seeded stream of index batches (with optional length bucketing) that the loop trains on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:  # only a type here: the benchmarks import calm_mini.training on an image without datasets
    from datasets import Dataset


def pad(sequences: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists on the ``side`` ("right" or "left"). Returns ``input_ids`` and
    ``attention_mask``, both (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        where = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[i, where] = torch.tensor(seq, dtype=torch.long)
        mask[i, where] = 1
    return ids, mask


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pad` on the left, as generation wants it."""
    return pad(sequences, pad_id, "left")


def encode_examples(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, answer_only_loss: bool = True
) -> dict[str, torch.Tensor]:
    """Tokenize ``[BOS] prompt answer [EOS]`` with right padding.

    Args:
        dataset: columns ``prompt`` and ``answer``.
    Returns:
        ``input_ids``, ``attention_mask`` and ``labels``, each (N, T); labels are -100 on padding
        and, with ``answer_only_loss``, on BOS and the prompt.
    """
    prompts = tokenizer(list(dataset["prompt"]))["input_ids"]
    answers = tokenizer(list(dataset["answer"]), add_special_tokens=False)["input_ids"]
    ids, mask = pad([p + a + [tokenizer.eos_token_id] for p, a in zip(prompts, answers)], tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        first_label, end = (len(p) if answer_only_loss else 1), len(p) + len(a) + 1
        labels[i, first_label:end] = ids[i, first_label:end]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_indices(
    n: int, batch_size: int, seed: int, lengths: torch.Tensor | None = None, window: int = 50
) -> Iterator[torch.Tensor]:
    """An endless stream of index batches over seeded reshuffles of ``range(n)``.

    With ``lengths`` (N,), each reshuffle is cut into windows of ``window`` batches, each window
    is sorted by length and cut into batches, and the batches are shuffled: batches hold
    examples of similar length (less padding) while the order stays random.
    The stream depends only on its arguments, so a resumed run replays it and skips the
    batches it has already trained on.
    """
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator)[: n - n % batch_size]
        if lengths is not None:
            span = window * batch_size
            windows = [w[torch.argsort(lengths[w], stable=True)] for w in order.split(span)]
            batches = torch.cat(windows).split(batch_size)
            order = torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator)])
        yield from order.split(batch_size)


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the trailing columns that are padding in every row (by ``attention_mask``).

    Exact for causal LMs: later positions never influence earlier ones.
    """
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return batch
    width = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else 1
    return {k: v[:, :width] if v.dim() >= 2 and v.shape[1] == mask.shape[1] else v for k, v in batch.items()}
