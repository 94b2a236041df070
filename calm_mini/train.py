"""Train the trainable parameters of a model — for CALM, the bridges only.

One loop serves the composed model and the kit's own small base models: AdamW, linear warm-up
then cosine decay, gradient clipping, a tqdm bar with the loss, periodic evaluation, and
atomic checkpoints with exact resume (a resumed run ends with the same weights, bit for bit, as
one that was never interrupted). For scale: bf16 autocast, gradient checkpointing through the
anchor, ``torch.compile`` of the bridges, length bucketing, and several processes through
`accelerate <https://huggingface.co/docs/accelerate>`_ — the same script runs on one CPU or under
``accelerate launch`` (DDP: each process trains on its share of every batch; the kit writes no
distributed code of its own). Checkpoints hold only safetensors and JSON::

    output_dir/
      latest.json                    {"checkpoint": "checkpoint-000200"}
      checkpoint-000200/
        trainable.safetensors        the trained parameters, by name
        optimizer.safetensors        AdamW moments, by parameter index
        trainer_state.json           step, log, scheduler and optimizer hyper-parameters, config
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from datasets import Dataset
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .files import atomic_folder, atomic_write

LATEST = "latest.json"
PRECISIONS = ("fp32", "bf16")
# Settings that change speed or memory but not the numbers: a checkpoint resumes across them.
NOT_COMPARED_ON_RESUME = ("log_every", "eval_every", "checkpoint_every", "gradient_checkpointing", "compile")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``checkpoint_every=0`` saves only at the end (when an output folder is given).

    Scaling options: ``precision="bf16"`` runs forward and loss under ``torch.autocast`` (the
    trainable weights and AdamW stay float32); ``bucket_by_length`` batches examples of similar
    length and trims each batch's trailing padding; ``gradient_checkpointing`` and ``compile``
    call the composed model's ``gradient_checkpointing_enable()`` / ``compile_bridges()``.
    ``batch_size`` is the global batch: with N processes each trains on batch_size / N.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0
    checkpoint_every: int = 0
    precision: str = "fp32"
    bucket_by_length: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1; got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0; got {self.lr}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision={self.precision!r}: use one of {PRECISIONS}.")


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
    width = max(len(p) + len(a) + 1 for p, a in zip(prompts, answers))
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        seq = p + a + [tokenizer.eos_token_id]
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        first_label = len(p) if answer_only_loss else 1
        labels[i, first_label : len(seq)] = ids[i, first_label : len(seq)]
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
    model.train()
    losses: list[torch.Tensor] = []
    # mininterval=1: a notebook progress widget updated 20 times a second floods Jupyter (and nbval)
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, mininterval=1,
               disable=not progress or not main)
    try:
        while step < cfg.steps:
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
                step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
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


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(output_dir: Path, step: int, log: list[dict], named, optimizer, schedule, cfg: TrainConfig) -> Path:
    """Write ``checkpoint-{step}`` into a temporary folder, rename it into place, then point
    ``latest.json`` at it and remove older checkpoints. An interruption at any moment leaves
    the previous complete checkpoint in force."""
    name = f"checkpoint-{step:06d}"
    with atomic_folder(output_dir / name) as tmp:
        save_file({n: p.detach().contiguous().cpu() for n, p in named}, tmp / "trainable.safetensors")
        opt = optimizer.state_dict()
        tensors = {f"{i}.{k}": v.contiguous().cpu() for i, s in opt["state"].items() for k, v in s.items()}
        save_file(tensors, tmp / "optimizer.safetensors")
        state = {
            "step": step,
            "log": log,
            "param_names": [n for n, _ in named],
            "param_groups": opt["param_groups"],
            "scheduler": {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"},
            "config": asdict(cfg),
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    atomic_write(output_dir / LATEST, lambda path: Path(path).write_text(json.dumps({"checkpoint": name})))
    for old in output_dir.glob("checkpoint-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return output_dir / name


def load_checkpoint(output_dir: Path, named, optimizer, schedule, cfg: TrainConfig) -> tuple[int, list[dict]]:
    """Restore parameters, optimizer and schedule from ``output_dir``'s latest checkpoint.

    Raises:
        ValueError: the checkpoint is corrupt, or was made for other parameters or settings.
    """
    try:
        folder = output_dir / json.loads((output_dir / LATEST).read_text())["checkpoint"]
        state = json.loads((folder / "trainer_state.json").read_text())
        weights = load_file(folder / "trainable.safetensors")
        moments = load_file(folder / "optimizer.safetensors")
    except (OSError, KeyError, json.JSONDecodeError, SafetensorError) as err:
        raise ValueError(f"The checkpoint in {output_dir} is corrupt or incomplete ({err}); delete it to start over.") from err
    names = [n for n, _ in named]
    if state["param_names"] != names:
        raise ValueError(
            f"The checkpoint in {output_dir} was made for other trainable parameters "
            f"({len(state['param_names'])} saved, {len(names)} now); use another output folder."
        )
    defaults = asdict(TrainConfig())  # checkpoints from before a setting existed had its default
    saved_cfg = {k: v for k, v in {**defaults, **state["config"]}.items() if k not in NOT_COMPARED_ON_RESUME}
    now_cfg = {k: v for k, v in asdict(cfg).items() if k not in NOT_COMPARED_ON_RESUME}
    if saved_cfg != now_cfg:
        diffs = {k: (saved_cfg[k], now_cfg[k]) for k in saved_cfg if saved_cfg[k] != now_cfg[k]}
        raise ValueError(f"The checkpoint in {output_dir} was made with other settings (saved, now): {diffs}.")
    with torch.no_grad():
        for n, p in named:
            if weights[n].shape != p.shape:
                raise ValueError(f"Checkpoint parameter {n} has shape {tuple(weights[n].shape)}, the model {tuple(p.shape)}.")
            p.copy_(weights[n])
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    schedule.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    return state["step"], state["log"]
