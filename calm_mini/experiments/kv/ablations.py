"""The ablations of the key-value experiment: every variant trains the same number of parameters
(the bridges' count) on the same D_C — CALM without normalised bridge inputs, a random, a
vanilla and an encoder m_A, LoRA on the anchor, a fully fine-tuned anchor (the skyline) — and
the bridge-placement study.

    ablations(ExperimentConfig.classroom())
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from datasets import concatenate_datasets
from torch import nn

from ...core import ComposedModel, Reading, SequenceState, positions_from_mask
from ...models import tiny_like
from ...training import encode_examples, pad
from ..reports import mean_table, provenance, spread, write_report
from .base_models import BaseModels, build_base_models, load_or_train
from .run import TASKS, ExperimentConfig, compose_kv, evaluate, save_figures, seeded, train_bridges


def placement_study(cfg: "ExperimentConfig") -> dict[str, tuple[tuple[int, int], ...]]:
    """The bridge-placement study for ``cfg``'s models: (augmenting layer, anchor layer) pairs,
    all reading m_A's last layer. Names count layers from 1, as the README's table does."""
    last, n = cfg.augmenting.n_layers - 1, cfg.anchor.n_layers
    middle = (n - 1) // 2
    return {
        f"1 bridge, middle ({last + 1}→{middle + 1})": ((last, middle),),
        "2 bridges, middle": ((last, middle), (last, min(middle + 1, n - 1))),
        "after every anchor layer": tuple((last, j) for j in range(n)),
        "embeddings only": ((last, -1),),
        "embeddings + every layer": tuple(tuple(p) for p in cfg.layers),
    }


def lora_anchor(anchor: nn.Module, budget: int) -> nn.Module:
    """A copy of the anchor with LoRA on every linear map of its layers, its rank chosen so
    that the trainable parameters come closest to ``budget`` (the bridges' count)."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    per_rank = sum(
        m.in_features + m.out_features
        for name, m in anchor.named_modules()
        if isinstance(m, nn.Linear) and name.split(".")[-1] in targets
    )
    rank = max(1, round(budget / per_rank))
    model = get_peft_model(copy.deepcopy(anchor), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    return model


class EncoderComposition(ComposedModel):
    """The paper's *encoder* ablation: m_A reads the prompt once, as an encoder, and every anchor
    position may read all of it — instead of reading the same tokens as the anchor, causally.

    Training batches carry ``encoder_ids``/``encoder_mask`` (B, S) (:func:`encode_with_prompts`);
    ``generate`` reads the prompt. Built from a composition with :meth:`of`.
    """

    @classmethod
    def of(cls, model: ComposedModel) -> "EncoderComposition":
        """The same base models, config and bridge weights, read as an encoder."""
        encoder = cls(model.anchor, list(model.augmenting), model.calm_config)
        encoder.bridges.load_state_dict(model.bridges.state_dict())
        return encoder

    def forward(self, input_ids, attention_mask=None, encoder_ids=None, encoder_mask=None, **kwargs):
        if encoder_ids is None:
            raise ValueError("The encoder ablation needs encoder_ids (the prompt m_A reads); see encode_with_prompts.")
        self._prompt = (encoder_ids, encoder_mask if encoder_mask is not None else torch.ones_like(encoder_ids))
        return super().forward(input_ids, attention_mask, **kwargs)

    def generate(self, input_ids, attention_mask=None, **kwargs):
        self._prompt = (input_ids, attention_mask if attention_mask is not None else torch.ones_like(input_ids))
        return super().generate(input_ids, attention_mask, **kwargs)

    def read(self, sequence: SequenceState, input_ids, attention_mask, position_ids) -> Reading:
        """The first call runs m_A on the prompt alone; every call's anchor tokens read all of it."""
        ids, prompt_mask = self._prompt
        past, new = sequence.length, input_ids.shape[1]
        if past == 0:
            positions = positions_from_mask(prompt_mask, 0, ids.shape[1], ids.device)
            states = [self.augmenting_states(a, ids, prompt_mask, positions, None) for a in range(len(self.augmenting))]
            kv = [bridge.keys_values(states[s.augmenting][s.augmenting_layer]) for s, bridge in zip(self.specs, self.bridges)]
            sequence.keys, sequence.values = [k for k, _ in kv], [v for _, v in kv]
        readable = prompt_mask.bool()[:, None, :].expand(ids.shape[0], new, ids.shape[1])
        if attention_mask is not None:
            readable = readable & attention_mask.bool()[:, -new:, None]
        distance = torch.zeros(readable.shape[1:], device=ids.device)
        return Reading(sequence.keys, sequence.values, readable, distance, past)


def encode_with_prompts(dataset, tokenizer) -> dict[str, torch.Tensor]:
    """:func:`encode_examples` plus the prompt alone (right-padded) for the encoder ablation."""
    data = encode_examples(dataset, tokenizer)
    data["encoder_ids"], data["encoder_mask"] = pad(tokenizer(list(dataset["prompt"]))["input_ids"], tokenizer.pad_token_id)
    return data


def train_and_score(
    model: nn.Module, base: BaseModels, cfg: ExperimentConfig, data: dict[str, torch.Tensor] | None = None,
    tasks: dict[str, str] = TASKS, progress: bool = True, desc: str = "bridges",
) -> dict:
    """Train ``model``'s trainable parameters on D_C (``data``, default D_C encoded) with
    ``cfg.bridges`` but no evaluation during training, then score it on ``tasks``.

    Returns ``{task: exact match %, ..., "trainable": parameters trained, "final_loss": ...,
    "seconds": training and scoring}`` — one row of the ablation tables.
    """
    start = time.perf_counter()
    log = train_bridges(model, base, replace(cfg, bridges=replace(cfg.bridges, eval_every=0)), data=data,
                        progress=progress, desc=desc)
    scores = evaluate({desc: model}, base, cfg.eval_batch_size, tasks)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {t: scores[t][desc] for t in tasks} | {
        "trainable": trainable, "final_loss": round(log[-1]["loss"], 4), "seconds": round(time.perf_counter() - start)}


def ablations(
    cfg: ExperimentConfig, assets: str | Path = "assets", cache_dir: str | Path | None = None,
    progress: bool = True, placements: dict | None = None, seeds: Sequence[int] = (0,),
) -> dict:
    """Every variant trains the same number of parameters (the bridges' count) on the same D_C,
    once per seed in ``seeds`` (each seeds data, base models and bridges, :func:`seeded`).

    Returns ``{"variants": {name: {task: acc, ...}}, "placement": {name: {...}}, "budget": ...}``
    (with several seeds each accuracy is the mean, ``range`` holds ``{"variants"|"placement":
    {name: {task: {"mean", "min", "max"}}}}`` and ``per_seed`` each seed's tables) plus the
    config, its hash, the version and the seeds; writes ``kv_ablations.json`` and figures to ``assets``.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={list(seeds)}: give one or more distinct seeds, e.g. --seeds 5 or --seeds 0,1,2.")
    runs = [_ablations_one_seed(seeded(cfg, seed), cache_dir, progress, placements) for seed in seeds]
    tasks = ("NUM-MATH", "KV-MATH")
    report = {"setting": cfg.setting, **provenance(cfg, seeds), "budget": runs[0]["budget"]}
    for part in ("variants", "placement"):
        report[part] = mean_table([run[part] for run in runs], tasks)
    if len(seeds) > 1:
        report["range"] = {part: spread([run[part] for run in runs], tasks) for part in ("variants", "placement")}
        report["per_seed"] = [{"seed": seed, **run} for seed, run in zip(seeds, runs)]
    write_report(report, Path(assets) / "kv_ablations.json")
    save_figures(report, Path(assets), "ablations")
    return report


def _ablations_one_seed(cfg: ExperimentConfig, cache_dir, progress: bool, placements: dict | None) -> dict:
    """One seed's variants and placement study: ``{"budget", "variants", "placement"}``."""
    base = build_base_models(cfg.kv, cfg.anchor, cfg.augmenting, cache_dir, progress)
    tokenizer, splits = base.data.tokenizer, base.data.splits
    tasks = {k: v for k, v in TASKS.items() if k in ("NUM-MATH", "KV-MATH")}
    variants: dict[str, dict] = {}

    def run(name: str, model: nn.Module, data=None) -> None:
        variants[name] = train_and_score(model, base, cfg, data, tasks, progress, desc=name)

    calm = compose_kv(base, cfg)
    run("CALM", calm)
    budget = calm.num_bridge_parameters()
    run("CALM, raw bridge inputs", compose_kv(base, replace(cfg, normalize_inputs=False)))
    torch.manual_seed(cfg.anchor.train.seed)
    run("random m_A", compose_kv(base, cfg, augmenting=tiny_like(base.augmenting)))
    vanilla = load_or_train("vanilla", base.data, cfg.augmenting, cache_dir, progress)
    run("vanilla m_A", compose_kv(base, cfg, augmenting=vanilla))
    run("m_A as encoder", EncoderComposition.of(compose_kv(base, cfg)), encode_with_prompts(splits["dc_train"], tokenizer))
    run("LoRA on m_B", lora_anchor(base.anchor, budget))
    skyline = copy.deepcopy(base.anchor).requires_grad_(True)
    everything = concatenate_datasets([splits["dc_train"], splits["augmenting_train"]]).shuffle(seed=cfg.kv.seed)
    run("fine-tuned m_B (skyline)", skyline, encode_examples(everything, tokenizer))

    placement: dict[str, dict] = {}
    for name, layers in (placements if placements is not None else placement_study(cfg)).items():
        for recency in (False, True):
            model = compose_kv(base, replace(cfg, recency_bias=recency), layers=layers)
            label = f"{name}{' + recency' if recency else ''}"
            row = train_and_score(model, base, cfg, tasks=tasks, progress=progress, desc=label)
            placement[label] = {t: row[t] for t in tasks} | {
                "bridges": len(layers), "layers": [list(p) for p in layers], "recency_bias": recency,
                "trainable": row["trainable"], "final_loss": row["final_loss"], "seconds": row["seconds"]}
    return {"budget": budget, "variants": variants, "placement": placement}
