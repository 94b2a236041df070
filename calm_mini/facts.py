"""A real composition that runs offline: SmolLM2-135M-Instruct learns fictional facts from a
small augmenting model, through bridges trained on questions about other people.

    report = run(FactsConfig.classroom())      # train-or-load m_A, train bridges, evaluate, write JSON

The pieces, in the order of the data:

* the world (:mod:`calm_mini.data.facts`): invented people and four facts each;
* the augmenting model m_A: a small Llama with SmolLM2's tokenizer, its token embeddings (and,
  tied to them, its output layer) copied from SmolLM2 and frozen, its layers trained from scratch
  on fact statements about ALL people — loss on the value tokens only. Sharing the anchor's
  embedding space means m_A's last hidden state already "speaks" the anchor's output vocabulary;
* the composite: bridges from m_A's last layer into the anchor's upper layers, trained with
  :func:`calm_mini.train.train` on chat questions about the *train* people, plus ordinary chat
  prompts with the anchor's own answers (so ordinary answers stay). At the value tokens the
  target is m_A's own next-token distribution, on the ordinary answers the anchor's
  (:func:`soft_targets`): the bridges learn to pass on what m_A says, not to memorise the train
  people's facts — which the true values alone reward. The frozen
  anchor's states entering the lowest bridged layer are computed once (*feature caching*,
  :func:`anchor_features`); a step runs only the anchor layers from there up, and the output
  layer only where there is a label (:class:`CachedAnswerWindow`) — same loss and gradients;
* evaluation on the *held-out* people: exact answers, value-token accuracy, and the anchor's
  ordinary chat answers beside the composite's.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
from datasets import Dataset
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutput

from .basemodels import cached_model, default_cache_dir, settings_key
from .compose import ComposedModel, compose, positions_from_mask
from .data.facts import (
    World,
    WorldConfig,
    augmenting_corpus,
    chat_splits,
    make_world,
    ordinary_prompts,
    ordinary_questions,
    statements,
)
from .evaluate import generate_answers, left_pad
from .files import atomic_write
from .train import TrainConfig, train

CACHE_VERSION = 1  # bump when training code changes what a cached augmenting model would be
SETTINGS = ("classroom", "full")


@dataclass(frozen=True)
class AugmentingConfig:
    """m_A: a Llama as wide as the anchor (so it can take the anchor's embeddings), shallow."""

    n_layers: int = 2
    n_heads: int = 9
    n_kv_heads: int = 3
    d_ff: int = 768
    anchor_embeddings: bool = True  # copy the anchor's token embeddings (tied output layer) and freeze them
    steps: int = 500
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 20
    bucket_by_length: bool = True  # batches of similar length: 1.7× faster on a CPU than padding to the longest
    seed: int = 0

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup_steps,
                           weight_decay=0.0, seed=self.seed, log_every=25, bucket_by_length=self.bucket_by_length)


@dataclass(frozen=True)
class FactsConfig:
    """Everything that decides the demo; ``classroom()`` trains on 2 CPU cores in ≤ 10 minutes."""

    setting: str = "classroom"
    world: WorldConfig = field(default_factory=WorldConfig.classroom)
    augmenting: AugmentingConfig = AugmentingConfig()
    layers: tuple[tuple[int, int], ...] = ((1, 27), (1, 29))  # (m_A layer, anchor layer), 0-based
    recency_bias: bool = True
    normalize_inputs: bool = True  # bridges in units of the states' RMS (see calm_mini.bridge)
    # No length buckets for the bridges: they would split questions from ordinary rows (validation
    # exact 32.5 % with them, 45.0 % without).
    bridges: TrainConfig = TrainConfig(steps=400, batch_size=16, lr=2e-3, warmup_steps=10, log_every=10)
    ordinary_fraction: float = 0.25  # share of bridge-training rows that are ordinary chat with the anchor's answers
    ordinary_generated: int = 56  # ordinary prompts drawn from patterns, beside the 18 fixed training ones
    ordinary_new_tokens: int = 24
    eval_batch_size: int = 32
    threads: int | None = None  # torch threads for the run; None leaves the current setting
    feature_cache: bool = True  # compute the anchor's states below the lowest bridge once, not at every step
    value_targets: str = "augmenting"  # value tokens learn m_A's distribution ("augmenting") or the true value ("labels")
    ordinary_targets: str = "anchor"  # ordinary answers learn the anchor's distribution ("anchor") or its tokens ("labels")
    target_top_k: int = 64  # words kept of a soft target's distribution

    def __post_init__(self) -> None:
        for name, allowed in (("value_targets", ("augmenting", "labels")), ("ordinary_targets", ("anchor", "labels"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}.")
        if not 0 <= self.ordinary_fraction < 1:
            raise ValueError(f"ordinary_fraction={self.ordinary_fraction}: the share of ordinary chat rows must be in "
                             f"[0, 1) (some rows must be questions about people), e.g. 0.25.")

    @classmethod
    def classroom(cls, **overrides) -> FactsConfig:
        return replace(cls(), **overrides)

    @classmethod
    def full(cls, **overrides) -> FactsConfig:
        """1000 people, deeper m_A, more bridges and steps: for a GPU."""
        base = cls(
            setting="full", world=WorldConfig.full(),
            augmenting=AugmentingConfig(n_layers=4, steps=4000, batch_size=64),
            layers=((3, 23), (3, 25), (3, 27), (3, 29)),
            bridges=TrainConfig(steps=1500, batch_size=32, lr=1e-3, warmup_steps=50, log_every=50),
            ordinary_new_tokens=48, eval_batch_size=64,
        )
        return replace(base, **overrides)

    @classmethod
    def named(cls, setting: str, **overrides) -> FactsConfig:
        if setting not in SETTINGS:
            raise ValueError(f"Unknown setting {setting!r}: choose one of {', '.join(SETTINGS)}.")
        return getattr(cls, setting)(**overrides)


# ---------------------------------------------------------------------- the augmenting model m_A
def encode_corpus(corpus: Dataset, tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """Tokenize the augmenting corpus with right padding; labels only on the target spans.

    Returns ``input_ids``, ``attention_mask``, ``labels``, each (N, T); a token is a label when
    its characters overlap a target span (`` Tavrik.``), -100 elsewhere.
    """
    encoded = tokenizer(list(corpus["text"]), return_offsets_mapping=True, add_special_tokens=False)
    width = max(map(len, encoded["input_ids"]))
    ids = torch.full((len(corpus), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (row, offsets, spans) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], corpus["targets"])):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        for t, (start, end) in enumerate(offsets):
            if any(end > a and start < b for a, b in spans):
                labels[i, t] = row[t]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


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
        width = int(attention_mask.sum(-1).max())  # right padding: drop the columns no row uses
        input_ids, attention_mask, labels = input_ids[:, :width], attention_mask[:, :width], labels[:, :width]
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return labelled_loss(hidden, labels, self.model.lm_head)


def new_augmenting(anchor: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: AugmentingConfig) -> LlamaForCausalLM:
    """A fresh m_A as wide as the anchor, with the anchor's vocabulary; with
    ``cfg.anchor_embeddings`` its (tied) embeddings are a frozen copy of the anchor's."""
    a = anchor.config
    config = LlamaConfig(
        vocab_size=a.vocab_size, hidden_size=a.hidden_size, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=2048, rope_theta=getattr(a, "rope_theta", 10000.0), rms_norm_eps=a.rms_norm_eps,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, bos_token_id=a.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    if cfg.anchor_embeddings:
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(anchor.get_input_embeddings().weight)
        model.model.embed_tokens.weight.requires_grad_(False)  # the tied output layer with it
    return model


def augmenting_cache_key(world: WorldConfig, cfg: AugmentingConfig, anchor: PreTrainedModel) -> str:
    """Folder name of a trained m_A: a hash of the world, m_A's settings and the anchor's identity."""
    return settings_key("facts-augmenting", {
        "world": world.to_dict(), "augmenting": asdict(cfg), "version": CACHE_VERSION,
        "anchor": [anchor.config.model_type, anchor.config.hidden_size, anchor.config.vocab_size,
                   getattr(anchor.config, "name_or_path", "")],
    })


def load_or_train_augmenting(
    world: World, anchor: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: AugmentingConfig,
    cache_dir: str | Path | None = None, progress: bool = True,
) -> tuple[LlamaForCausalLM, dict]:
    """m_A from the cache, or trained on the world's corpus (all people) and cached atomically.

    Returns (m_A in eval mode, info with ``train_seconds`` and ``final_loss``; ``cached`` says
    whether it was loaded).
    """
    folder = Path(cache_dir or default_cache_dir()) / augmenting_cache_key(world.config, cfg, anchor)

    def train_model():
        model = new_augmenting(anchor, tokenizer, cfg)
        data = encode_corpus(augmenting_corpus(world), tokenizer)
        log = train(TargetsOnlyLoss(model), data, cfg.train_config(), progress=progress, desc="augmenting")
        return model, {"world": world.config.to_dict(), "augmenting": asdict(cfg), "final_loss": log[-1]["loss"],
                       "log": log}

    model, info, cached = cached_model(folder, train_model)
    return model, {**info, "cached": cached}


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


@contextlib.contextmanager
def anchor_stack(anchor: PreTrainedModel, start: int = 0, stop: int | None = None,
                 inputs: torch.Tensor | None = None, head: bool = True) -> Iterator[None]:
    """For the duration of the block, the anchor's decoder runs only ``layers[start:stop]``;
    with ``inputs`` (B, T, D), those states replace its token embeddings (the ids still decide
    the mask, the positions and what the augmenting models read); with ``head=False`` its
    output layer is the identity, so ``.logits`` are the final-norm states (B, T, D).

    Rotary positions and the causal/padding mask are computed from ``position_ids`` and
    ``attention_mask`` before the first layer, so a stack that starts at layer ``start`` fed
    the states that entered it sees exactly what it sees in the full forward. Hooks on the kept
    layers (the bridges') stay in place, since the layer objects are the same. Llama-style
    anchors only (``anchor.model.layers``); everything is restored when the block ends.
    """
    body = getattr(anchor, "model", None)
    if not isinstance(getattr(body, "layers", None), nn.ModuleList) or not hasattr(body, "embed_tokens"):
        raise TypeError(f"Feature caching needs a Llama-style anchor (model.layers, model.embed_tokens); got "
                        f"{type(anchor).__name__}. Set FactsConfig(feature_cache=False) for other anchors.")
    layers = body.layers
    handle = None
    if inputs is not None:
        def embedded(module, args, output):
            if output.shape != inputs.shape:
                raise ValueError(f"Cached anchor states {tuple(inputs.shape)} do not fit the embeddings "
                                 f"{tuple(output.shape)}: trim them to the same rows and columns as the ids.")
            return inputs.to(output.dtype)

        handle = body.embed_tokens.register_forward_hook(embedded)
    lm_head = anchor.lm_head
    body.layers = nn.ModuleList(list(layers)[start:stop])
    if not head:
        anchor.lm_head = nn.Identity()
    try:
        yield
    finally:
        body.layers = layers
        anchor.lm_head = lm_head
        if handle is not None:
            handle.remove()


@torch.no_grad()
def anchor_features(anchor: PreTrainedModel, data: dict[str, torch.Tensor], layer: int,
                    batch_size: int = 32) -> torch.Tensor:
    """The anchor's hidden states entering decoder layer ``layer``, for every row of ``data``
    (left-padded ``input_ids``, ``attention_mask`` (N, T)), computed once: below the lowest
    bridge the frozen anchor sees the same inputs at every training step.

    Rows are run in batches of similar length (only the columns a batch uses); the states of
    padding columns are left at zero (no real position reads them).

    Returns: (N, T, D) in the anchor's dtype.
    """
    ids, mask = data["input_ids"], data["attention_mask"]
    lengths = mask.sum(-1)
    features = torch.zeros(*ids.shape, anchor.config.hidden_size, dtype=anchor.dtype)
    captured = {}
    handle = anchor.model.norm.register_forward_pre_hook(lambda module, args: captured.update(states=args[0]))
    try:
        with anchor_stack(anchor, 0, layer):
            for rows in torch.argsort(lengths).split(batch_size):
                width = int(lengths[rows].max())
                batch_mask = mask[rows, -width:]
                anchor.model(input_ids=ids[rows, -width:], attention_mask=batch_mask,
                             position_ids=positions_from_mask(batch_mask, 0, width, ids.device))
                features[rows, -width:] = captured["states"].to(features.dtype) * batch_mask[..., None]
    finally:
        handle.remove()
    return features


class CachedAnswerWindow(nn.Module):
    """:class:`AnswerWindow` made cheap, with the same loss and gradients: the anchor's layers
    below ``start`` (the lowest bridged layer) are replaced by their cached output (``features``
    from :func:`anchor_features`), so a step runs only the anchor layers from ``start`` up, the
    augmenting model and the bridges; and the output layer (49152 words wide) runs only at the
    positions that predict a label (:func:`labelled_loss`).
    """

    def __init__(self, model: ComposedModel):
        super().__init__()
        self.model = model
        self.start = max(0, model.lowest_bridged_layer)  # a bridge into the embeddings reads layer 0's input

    def forward(self, input_ids, attention_mask, labels, features, target_ids=None, target_probs=None
                ) -> CausalLMOutput:
        width = int(attention_mask.sum(-1).max())  # left padding: drop the columns no row uses
        anchor = self.model.anchor
        with anchor_stack(anchor, self.start, inputs=features[:, -width:], head=False):
            hidden = self.model(input_ids[:, -width:], attention_mask=attention_mask[:, -width:],
                                logits_to_keep=labels.shape[1]).logits  # (B, W, D): states, not logits
        return labelled_loss(hidden, labels, anchor.lm_head, target_ids, target_probs)


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
    own = generate_tokens(anchor, tokenizer, ordinary, cfg.ordinary_new_tokens, cfg.eval_batch_size)
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


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def generate_tokens(model, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int,
                    batch_size: int = 32) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (left-padded batches), as token lists cut after the
    first end token (kept) or at ``max_new_tokens``."""
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(tokenizer(prompts[start:start + batch_size], add_special_tokens=False)["input_ids"],
                             tokenizer.pad_token_id)
        new = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)[:, ids.shape[1]:]
        for row in new.tolist():
            out.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    return out


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
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
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
    alone = generate_tokens(anchor, tokenizer, prompts, max_new_tokens, batch_size)
    together = generate_tokens(composite, tokenizer, prompts, max_new_tokens, batch_size)
    rows, agreed, total = [], 0, 0
    for q, a, c in zip(questions, alone, together):
        common = next((i for i, (x, y) in enumerate(zip(a, c)) if x != y), min(len(a), len(c)))
        agreed, total = agreed + common, total + len(a)
        rows.append({"prompt": q, "anchor": tokenizer.decode(a, skip_special_tokens=True),
                     "composite": tokenizer.decode(c, skip_special_tokens=True), "identical": a == c})
    return {"identical": sum(r["identical"] for r in rows), "of": len(rows),
            "agreement": round(100 * agreed / total, 1), "answers": rows}


# ---------------------------------------------------------------------- the whole demo
def compose_facts(anchor: PreTrainedModel, augmenting: PreTrainedModel, cfg: FactsConfig) -> ComposedModel:
    """The composite of the demo; its bridges' initial weights are seeded by ``cfg.bridges.seed``."""
    torch.manual_seed(cfg.bridges.seed)
    return compose(anchor, augmenting, layers=[tuple(p) for p in cfg.layers], recency_bias=cfg.recency_bias,
                   normalize_inputs=cfg.normalize_inputs)


@torch.no_grad()
def soft_targets(model: nn.Module, data: dict[str, torch.Tensor], where: torch.Tensor, top_k: int = 64,
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """``model``'s own next-token distribution at the tokens ``where``: soft targets for
    :func:`labelled_loss`. m_A's at the value tokens teach the bridges to say what m_A says,
    rather than to learn the train people's facts themselves; the anchor's at its own ordinary
    answers teach them to leave those alone.

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


def run(cfg: FactsConfig, assets: str | Path | None = "assets", cache_dir: str | Path | None = None,
        progress: bool = True, split: str = "heldout", anchor: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None) -> dict:
    """The demo end to end: world, m_A (cached), bridges, evaluation on ``split``'s people.

    ``split="validation"`` scores the validation people instead (to choose settings without
    looking at the held-out test). The anchor is SmolLM2-135M-Instruct unless ``anchor`` and
    its chat ``tokenizer`` are given (tests pass tiny ones). Writes ``facts_results.json`` to
    ``assets`` (unless None) and returns the report.
    """
    from .models import load

    if split not in ("heldout", "validation"):
        raise ValueError(f"split={split!r}: score 'heldout' (the test) or 'validation' (to choose settings).")
    if (anchor is None) != (tokenizer is None):
        raise ValueError("Give both anchor and tokenizer, or neither (then SmolLM2-135M-Instruct is loaded).")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    if anchor is None:
        anchor, tokenizer = load("smollm2-135m-offline")
    world = make_world(cfg.world, tokenizer)
    augmenting, info = load_or_train_augmenting(world, anchor, tokenizer, cfg.augmenting, cache_dir, progress)
    model = compose_facts(anchor, augmenting, cfg)
    bridge_start = time.perf_counter()
    data, _ = bridge_data(world, tokenizer, anchor, cfg)
    window, data = bridge_trainer(model, data, cfg)
    feature_seconds = time.perf_counter() - bridge_start
    log = train(window, data, cfg.bridges, progress=progress, desc="bridges")
    bridge_seconds = time.perf_counter() - bridge_start
    facts = statements(world)
    known = {}
    for part in ("train", "validation", "heldout"):
        rows = facts.select([i for i, s in enumerate(facts["split"]) if s == part])
        known[part] = target_accuracy(augmenting, tokenizer, list(rows["prompt"]), list(rows["answer"]),
                                      cfg.eval_batch_size)
    questions = chat_splits(world, tokenizer)
    table = chat_table({"anchor": anchor, "augmenting": augmenting, "composite": model}, tokenizer, questions[split],
                       cfg.eval_batch_size)
    seen = questions["train"].select(range(min(len(questions["train"]), len(questions[split]))))  # as many as scored
    table["composite (train people)"] = chat_table({"c": model}, tokenizer, seen, cfg.eval_batch_size)["c"]
    ordinary = compare_ordinary(anchor, model, tokenizer, ordinary_prompts(tokenizer)["shown"],
                                ordinary_questions()["shown"], cfg.ordinary_new_tokens, cfg.eval_batch_size)
    report = {
        "setting": cfg.setting, "split": split, "config": json.loads(json.dumps(asdict(cfg))),
        "people": {s: len(world.split(s)) for s in ("train", "validation", "heldout")},
        "augmenting_knows_statements": known, "chat": table, "ordinary": ordinary,
        "bridge_parameters": model.num_bridge_parameters(),
        "augmenting_parameters": sum(p.numel() for p in augmenting.parameters()),
        "seconds": {"augmenting": info["train_seconds"], "augmenting_cached": info["cached"],
                    "bridge_data_and_features": round(feature_seconds, 1),  # included in "bridges"
                    "bridges": round(bridge_seconds, 1), "total": round(time.perf_counter() - start, 1)},
        "threads": torch.get_num_threads(), "log": log, "summary": model.summary(),
    }
    if assets is not None:
        path = Path(assets) / "facts_results.json"
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    return report


def format_report(report: dict) -> str:
    """The report as text: the chat table (Markdown), what m_A knows, the ordinary answers, times."""
    split = report["split"]
    lines = [f"Chat questions about {report['people'][split]} {split} people (%):", "",
             "| model | exact answer | right value in answer | value tokens (forced) | whole value (forced) |",
             "|---|---:|---:|---:|---:|"]
    for name, row in report["chat"].items():
        lines.append(f"| {name} | {row['exact']:.1f} | {row['value']:.1f} | {row['value_token']:.1f} | {row['value_all']:.1f} |")
    known = ", ".join(f"{s} {v['all']:.1f}" for s, v in report["augmenting_knows_statements"].items())
    lines += ["", f"m_A completes corpus statements (whole value, %): {known}", "",
              (f"Ordinary prompts: {report['ordinary']['identical']} of {report['ordinary']['of']} answers identical "
               f"to the anchor's; {report['ordinary']['agreement']:.1f} % of the anchor's tokens reproduced.")]
    for row in report["ordinary"]["answers"]:
        lines.append(f"  {row['prompt']}\n    anchor    : {row['anchor']!r}\n    composite : {row['composite']!r}")
    lines.append(f"\nseconds: {report['seconds']}; threads: {report['threads']}")
    return "\n".join(lines)
