"""The composition set D_C of the facts demo and how the bridges train on it: chat questions
about the train people mixed with ordinary prompts the anchor answers itself, with soft targets
(m_A's distribution at the value tokens, the anchor's on its own answers) and feature caching."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...core import ComposedModel, compose
from ...evaluation import greedy_tokens
from ...training import AnswerWindow, CachedAnswerWindow, anchor_features, left_pad, soft_targets
from .config import FactsConfig
from .world import World, chat_splits, ordinary_prompts


# ---------------------------------------------------------------------- chat data for the bridges
def encode_chat(prompts: list[str], answers: list[str], tokenizer: PreTrainedTokenizerBase,
                ended: list[bool] | None = None) -> dict[str, torch.Tensor]:
    """``prompt answer <|im_end|>`` rows, LEFT-padded so every answer ends at the last position.
    ``ended[i] = False`` leaves out the end token of row i (an answer cut at a length limit).

    Returns ``input_ids``, ``attention_mask`` (N, T) and ``labels`` (N, W): the last W positions
    only, W = longest answer + end token + 1, -100 except on the answer and its end token. With
    :class:`AnswerWindow` the anchor computes logits over those W positions alone.
    """
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    ended = ended if ended is not None else [True] * len(answers)
    answer_ids = [a + [tokenizer.eos_token_id] * e for a, e in zip(tokenizer(answers, add_special_tokens=False)["input_ids"], ended)]
    ids, mask = left_pad([p + a for p, a in zip(prompt_ids, answer_ids)], tokenizer.pad_token_id)
    window = max(map(len, answer_ids)) + 1
    labels = torch.full((len(prompts), window), -100, dtype=torch.long)
    for i, a in enumerate(answer_ids):
        labels[i, window - len(a):] = torch.tensor(a)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def bridge_data(world: World, tokenizer: PreTrainedTokenizerBase, anchor: PreTrainedModel, cfg: FactsConfig,
                split: str = "train") -> tuple[dict[str, torch.Tensor], list[str]]:
    """The composition set D_C: chat questions about ``split``'s people, mixed with ordinary chat
    prompts answered by the anchor itself (so that the bridges learn to leave those alone).

    Returns (encoded rows, the anchor's answers to the ordinary prompts). The rows are those of
    :func:`encode_chat` plus two (N, W) masks aligned with ``labels``: ``value``, True at the
    tokens of the value (`` Tavrik.``), which only m_A can know; ``ordinary``, True at the
    anchor's own answer tokens (and end token) of the ordinary rows.
    """
    questions = chat_splits(world, tokenizer)[split]
    prompts, answers = list(questions["prompt"]), list(questions["answer"])
    ended = [True] * len(prompts)
    n_ordinary = round(len(prompts) * cfg.ordinary_fraction / (1 - cfg.ordinary_fraction))
    ordinary = ordinary_prompts(tokenizer, cfg.ordinary_generated, cfg.world.seed)["train"][:n_ordinary]
    own = greedy_tokens(anchor, tokenizer, ordinary, cfg.ordinary_new_tokens, cfg.eval_batch_size, add_special_tokens=False)
    for k in range(n_ordinary):  # more rows than prompts: the prompts repeat
        tokens = own[k % len(own)]
        finished = tokenizer.eos_token_id in tokens
        prompts.append(ordinary[k % len(own)])
        answers.append(tokenizer.decode(tokens[: tokens.index(tokenizer.eos_token_id)] if finished else tokens))
        ended.append(finished)
    data = encode_chat(prompts, answers, tokenizer, ended)
    value = torch.zeros_like(data["labels"], dtype=torch.bool)
    width = value.shape[1]
    for i, (answer, prefix) in enumerate(zip(questions["answer"], questions["prefix"])):
        answer_ids, prefix_ids = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (answer, prefix))
        if answer_ids[: len(prefix_ids)] != prefix_ids:
            raise ValueError(f"The tokenizer merges the answer's prefix {prefix!r} with its value in {answer!r}; "
                             f"the value tokens cannot be told apart. Use a tokenizer that splits at spaces.")
        value[i, width - 1 - (len(answer_ids) - len(prefix_ids)): width - 1] = True  # the last label is the end token
    ordinary = torch.zeros_like(value)
    ordinary[len(questions):] = data["labels"][len(questions):] != -100
    own_answers = [tokenizer.decode(t, skip_special_tokens=True) for t in own]
    return {**data, "value": value, "ordinary": ordinary}, own_answers


def compose_facts(anchor: PreTrainedModel, augmenting: PreTrainedModel, cfg: FactsConfig) -> ComposedModel:
    """The composite of the demo; its bridges' initial weights are seeded by ``cfg.bridges.seed``."""
    torch.manual_seed(cfg.bridges.seed)
    return compose(anchor, augmenting, layers=[tuple(p) for p in cfg.layers], recency_bias=cfg.recency_bias,
                   normalize_inputs=cfg.normalize_inputs)


def bridge_trainer(model: ComposedModel, data: dict[str, torch.Tensor], cfg: FactsConfig
                   ) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """What :func:`calm_mini.train.train` trains the bridges through, and its data (rows of
    :func:`bridge_data`). With ``cfg.value_targets == "augmenting"`` the value tokens get m_A's
    distribution as their target, with ``cfg.ordinary_targets == "anchor"`` the ordinary answers
    get the anchor's own (:func:`soft_targets`); with ``cfg.feature_cache`` the
    anchor's states entering the lowest bridged layer join the data (computed once here) and
    each step runs only the anchor layers from there up."""
    data = dict(data)
    masks = {name: data.pop(name, None) for name in ("value", "ordinary")}
    teachers = {"value": model.augmenting[0] if cfg.value_targets == "augmenting" else None,
                "ordinary": model.anchor if cfg.ordinary_targets == "anchor" else None}
    for name, teacher in teachers.items():
        if teacher is None:
            continue
        if masks[name] is None:
            raise ValueError(f"Soft targets need the rows' {name!r} mask (bridge_data adds it), or set "
                             f"FactsConfig({name}_targets='labels').")
        targets = soft_targets(teacher, data, masks[name], cfg.target_top_k, cfg.eval_batch_size)
        for key, tensor in targets.items():
            data[key] = data[key] + tensor if key in data else tensor  # the two masks never overlap
    if not cfg.feature_cache:
        return AnswerWindow(model), data
    window = CachedAnswerWindow(model)
    return window, {**data, "features": anchor_features(model.anchor, data, window.start, cfg.eval_batch_size)}
