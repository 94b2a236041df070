"""How the keys experiment scores a model: the greedy next token after each prompt, read with
the model's own tokenizer, against the digit (exact match, %). The same for m_A (characters),
the anchor and the composite (the anchor's tokens)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...core import positions_from_mask
from ...training import left_pad


@torch.no_grad()
def next_tokens(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                batch_size: int = 64) -> list[str]:
    """The greedy next token after each prompt, decoded. Batches are left-padded (B, T), so the
    last column is every prompt's end; positions count real tokens only."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(tokenizer(prompts[start : start + batch_size])["input_ids"], tokenizer.pad_token_id)
        positions = positions_from_mask(mask, 0, mask.shape[1], mask.device)
        logits = model(ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       logits_to_keep=1).logits  # (B, 1, V)
        out += tokenizer.batch_decode(logits[:, -1].argmax(-1)[:, None])
    return out


def next_token_accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict],
                        batch_size: int = 64) -> float:
    """% of ``rows`` (``prompt``, ``answer``) whose greedy next token is the answer, to 0.1."""
    answers = next_tokens(model, tokenizer, [r["prompt"] for r in rows], batch_size)
    return round(100 * sum(a == r["answer"] for a, r in zip(answers, rows)) / len(rows), 1)


def score(models: dict[str, tuple[nn.Module, PreTrainedTokenizerBase]], rows: list[dict],
          batch_size: int = 64) -> dict[str, float]:
    """``{name: exact match %}`` of each (model, its tokenizer) on ``rows``."""
    return {name: next_token_accuracy(model, tokenizer, rows, batch_size) for name, (model, tokenizer) in models.items()}
