"""Train the trainable parameters of a model — for CALM, the bridges only.

One loop serves the composed model and the kit's own small base models: AdamW, linear warm-up
then cosine decay, gradient clipping, a tqdm bar with the loss, periodic evaluation, and atomic
checkpoints with exact resume (:mod:`calm_mini.training.checkpoints`; a resumed run ends with the
same weights, bit for bit, as one that was never interrupted). For scale: bf16 autocast,
gradient checkpointing through the anchor, ``torch.compile`` of the bridges, length bucketing,
and several processes through `accelerate <https://huggingface.co/docs/accelerate>`_ — the same
script runs on one CPU or under ``accelerate launch`` (DDP: each process trains on its share of
every batch; the kit writes no distributed code of its own).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from .batching import batch_indices, trim_padding
from .checkpoints import LATEST, load_checkpoint, save_checkpoint
from .config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))


def train(
    model: nn.Module,
    data: dict[str, torch.Tensor],
    cfg: TrainConfig,
    output_dir: str | os.PathLike | None = None,
    resume: bool = True,
    evaluate: Callable[[], dict[str, float]] | None = None,
    progress: bool = True,
    desc: str = "train",
    accelerator: Accelerator | None = None,
    distributed: bool = True,
    stop_at: int | None = None,
) -> list[dict]:
    """Train ``model``'s parameters that have ``requires_grad`` on ``data``.

    Args:
        model: called as ``model(**batch)`` and must return an output with ``.loss``; for a
            composed model only the bridges are trainable.
        data: tensors with the same first dimension N, e.g. from :func:`encode_examples`.
        output_dir: where checkpoints go; with ``resume`` an existing checkpoint there is
            loaded first and training continues from its step. Under ``accelerate launch``
            every process loads it and only the main process writes.
        evaluate: called every ``cfg.eval_every`` steps and at the end, on the main process
            only; its metrics are logged.
        accelerator: default: a new ``Accelerator``. In one process the model stays on its
            device; under ``accelerate launch`` it moves to the process's device and is
            wrapped in DDP.
        distributed: ``False`` trains in this process alone, even under ``accelerate launch``
            (for work that one process does for all, e.g. inside ``main_process_first()``).
        stop_at: end this call after that step, with a checkpoint there (given ``output_dir``),
            as if it had been interrupted; a later call resumes (e.g. a long run split into
            sessions). Default: run to ``cfg.steps``.
    Returns:
        the log: dicts with ``step``, ``loss`` (mean since the last entry, over all
        processes), ``lr`` and the evaluation metrics (main process).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("The model has no trainable parameters (nothing has requires_grad).")
    n = _check_data(data)
    accelerator = (accelerator or Accelerator()) if distributed else None
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    main = accelerator is None or accelerator.is_main_process
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size={cfg.batch_size} must be divisible by the {world} processes.")
    _apply_speed_options(model, cfg)
    wrapped = accelerator.prepare_model(model, device_placement=accelerator.use_distributed) if accelerator else model
    device = named[0][1].device
    optimizer = make_optimizer([p for _, p in named], cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    step, log = 0, []
    output_dir = Path(output_dir) if output_dir is not None else None
    if output_dir is not None and resume and (output_dir / LATEST).exists():
        step, log = load_checkpoint(output_dir, named, optimizer, schedule, cfg)
    lengths = data["attention_mask"].sum(dim=1) if cfg.bucket_by_length and "attention_mask" in data else None
    batches = batch_indices(n, cfg.batch_size, cfg.seed, lengths)
    for _ in range(step):
        next(batches)
    end = cfg.steps if stop_at is None else max(1, min(stop_at, cfg.steps))
    model.train()
    losses: list[torch.Tensor] = []
    # mininterval=1: a notebook progress widget updated 20 times a second floods Jupyter (and nbval)
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, mininterval=1,
               disable=not progress or not main)
    try:
        while step < end:
            idx = next(batches)[rank::world]  # this process's share of the global batch
            batch = {k: v[idx].to(device) for k, v in data.items()}
            if cfg.bucket_by_length:
                batch = trim_padding(batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = wrapped(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients over the processes here
            torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.detach().float())
            bar.update(1)
            log_now = step % cfg.log_every == 0 or step == cfg.steps
            eval_now = evaluate is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps)
            if log_now or eval_now:
                mean_loss = torch.stack(losses).mean()
                if accelerator is not None:
                    mean_loss = accelerator.reduce(mean_loss, reduction="mean")
                mean_loss = mean_loss.item()
                entry = {"step": step, "loss": mean_loss, "lr": schedule.get_last_lr()[0]}
                if eval_now and main:
                    model.eval()
                    entry.update(evaluate())
                    model.train()
                log.append(entry)
                losses = []
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if output_dir is not None and (
                step in (end, cfg.steps) or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            ):
                if main:
                    save_checkpoint(output_dir, step, log, named, optimizer, schedule, cfg)
                if accelerator is not None:
                    accelerator.wait_for_everyone()
    finally:
        bar.close()
        model.eval()
    return log


def _apply_speed_options(model: nn.Module, cfg: TrainConfig) -> None:
    """Gradient checkpointing (a composed model's, or a Hugging Face model's own) and
    compilation (a composed model's bridges, or the whole model) as ``cfg`` asks."""
    if cfg.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError(f"TrainConfig.gradient_checkpointing needs a composed or Hugging Face model; "
                             f"{type(model).__name__} has no gradient_checkpointing_enable().")
        model.gradient_checkpointing_enable()
    if cfg.compile:
        if hasattr(model, "compile_bridges"):
            model.compile_bridges()
        else:
            model.compile()


def _check_data(data: dict[str, torch.Tensor]) -> int:
    sizes = {k: len(v) for k, v in data.items()}
    if not sizes or len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise ValueError(f"Training data must be non-empty tensors of one length N; got lengths {sizes}.")
    return next(iter(sizes.values()))
