"""Atomic training checkpoints with exact resume: only safetensors and JSON on disk::

    output_dir/
      latest.json                    {"checkpoint": "checkpoint-000200"}
      checkpoint-000200/
        trainable.safetensors        the trained parameters, by name
        optimizer.safetensors        AdamW moments, by parameter index
        trainer_state.json           step, log, scheduler and optimizer hyper-parameters, config
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.files import atomic_folder, atomic_write
from .config import TrainConfig

LATEST = "latest.json"
# Settings that change speed or memory but not the numbers: a checkpoint resumes across them.
NOT_COMPARED_ON_RESUME = ("log_every", "eval_every", "checkpoint_every", "gradient_checkpointing", "compile")


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


def latest_step(output_dir: Path) -> int:
    """The step of the checkpoint ``latest.json`` points to in ``output_dir``; 0 if there is none."""
    try:
        name = json.loads((Path(output_dir) / LATEST).read_text())["checkpoint"]
        return json.loads((Path(output_dir) / name / "trainer_state.json").read_text())["step"]
    except (OSError, KeyError, json.JSONDecodeError):
        return 0


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
