"""Loss targets for training bridges cheaply: the output layer only where there is a label,
and soft targets — a teacher model's own next-token distribution instead of a single token.

:func:`labelled_loss` is the one loss; :class:`TargetsOnlyLoss` (a plain causal LM, right
padding), :class:`LabelledRows` (a composed model, right padding: your data's rows) and
:class:`AnswerWindow` (a composed model, left-padded answers at the end of each row) are the
modules that :func:`calm_mini.training.train` calls with a batch.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from ..core import ComposedModel, positions_from_mask
from .batching import trim_padding


def labelled_loss(hidden: torch.Tensor, labels: torch.Tensor, output_layer: nn.Module,
                  target_ids: torch.Tensor | None = None, target_probs: torch.Tensor | None = None) -> CausalLMOutput:
    """Next-token cross-entropy with the output layer run only where it predicts a label.

    Args:
        hidden: final states (B, T, D) (or logits (B, T, V) with ``output_layer=nn.Identity()``).
        labels: (B, T), -100 where nothing is predicted.
        target_ids, target_probs: optional soft targets (B, T, K), aligned with ``labels``: where
            ``target_probs[b, t]`` is not all zero, token t is scored against that distribution
            over the words ``target_ids[b, t]`` instead of against ``labels[b, t]``.
    Returns: an output whose ``.loss`` is the mean over labelled tokens.
    """
    targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    chosen = targets != -100
    log_probs = output_layer(hidden[:, :-1][chosen]).float().log_softmax(-1)  # (N, V)
    loss = -log_probs.gather(-1, targets[chosen][:, None])[:, 0]  # (N,)
    if target_probs is not None:
        probs = target_probs[:, 1:][chosen]  # (N, K)
        soft = -(probs * log_probs.gather(-1, target_ids[:, 1:][chosen])).sum(-1)
        loss = torch.where(probs.sum(-1) > 0, soft, loss)
    return CausalLMOutput(loss=loss.mean())


class TargetsOnlyLoss(nn.Module):
    """Wraps a causal LM for training: the output layer (49152 words wide) runs only at the
    positions that predict a label, not at every position.

    ``forward(input_ids, attention_mask, labels)`` with (B, T) tensors returns an output whose
    ``.loss`` is the mean cross-entropy over labelled tokens.
    """

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels) -> CausalLMOutput:
        batch = trim_padding({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return labelled_loss(hidden, labels, self.model.lm_head)


class LabelledRows(nn.Module):
    """Trains a composed model on right-padded rows (those of :func:`as_tensors`) at the cost of
    the rows themselves: each batch is cut to its longest row, and the anchor's output layer
    (its whole vocabulary wide) runs only at the positions that predict a label — the same loss
    as ``model(**batch).loss``, without the logits of prompts and padding.

    ``forward(input_ids, attention_mask, labels)``, all (B, T), returns an output whose ``.loss``
    is the mean cross-entropy over labelled tokens.
    """

    def __init__(self, model: ComposedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels) -> CausalLMOutput:
        batch = trim_padding({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        out = self.model(input_ids, attention_mask=attention_mask, logits_to_keep=1, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (B, T, D): the anchor's final states, after its last norm
        return labelled_loss(hidden, labels, self.model.anchor.get_output_embeddings())


class AnswerWindow(nn.Module):
    """Trains a composed model on left-padded answers: the anchor's output layer runs over the
    last ``labels.shape[1]`` positions only (``logits_to_keep``), where the answers are.

    ``forward(input_ids, attention_mask (B, T), labels (B, W), target_ids=None, target_probs=None)``;
    the optional soft targets (B, W, K) are those of :func:`labelled_loss`.
    """

    def __init__(self, model: ComposedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, target_ids=None, target_probs=None) -> CausalLMOutput:
        width = int(attention_mask.sum(-1).max())  # left padding: drop the columns no row uses
        logits = self.model(input_ids[:, -width:], attention_mask=attention_mask[:, -width:],
                            logits_to_keep=labels.shape[1]).logits  # (B, W, V)
        return labelled_loss(logits, labels, nn.Identity(), target_ids, target_probs)


@torch.no_grad()
def soft_targets(model: nn.Module, data: dict[str, torch.Tensor], where: torch.Tensor, top_k: int = 64,
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """``model``'s own next-token distribution at the tokens ``where``: soft targets for
    :func:`labelled_loss`. An augmenting model's, at the tokens only it knows, teaches the
    bridges to pass on what it says; the anchor's, at its own answers, to leave those alone.

    Args:
        model: a causal LM with the anchor's tokenizer (m_A, or the anchor without bridges).
        data: left-padded ``input_ids``, ``attention_mask`` (N, T) and ``labels`` (N, W).
        where: (N, W) bool, aligned with ``labels``: the tokens to give soft targets.
    Returns: ``target_ids`` (N, W, K) and ``target_probs`` (N, W, K), aligned with ``labels``:
        at a chosen token, the model's K most likely words for it (predicted from the position
        before) and their probabilities renormalised to sum to 1; zeros elsewhere. K = ``top_k``.
    """
    ids, mask = data["input_ids"], data["attention_mask"]
    n, width = where.shape
    top_k = min(top_k, model.config.vocab_size)
    target_ids = torch.zeros(n, width, top_k, dtype=torch.long)
    target_probs = torch.zeros(n, width, top_k)
    for rows in torch.arange(n)[where.any(-1)].split(batch_size):
        batch_mask = mask[rows]
        logits = model(ids[rows], attention_mask=batch_mask, logits_to_keep=width,
                       position_ids=positions_from_mask(batch_mask, 0, batch_mask.shape[1], ids.device)
                       ).logits  # (b, W, V): position t predicts label t+1
        best = logits[:, :-1].float().softmax(-1).topk(top_k, dim=-1)
        chosen = where[rows, 1:, None]
        target_ids[rows, 1:] = best.indices * chosen
        target_probs[rows, 1:] = best.values / best.values.sum(-1, keepdim=True) * chosen
    return {"target_ids": target_ids, "target_probs": target_probs}
