"""Run by tests/test_distributed.py under ``accelerate launch --cpu --num_processes 2``.

Trains the classroom key-value bridges for a few steps with checkpoints; every process then
writes its own copy of the bridges to OUT/rank{R}.safetensors, so the test can check that the
processes agree. ``--stop-at K`` interrupts every process at training step K (a crash).
"""

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from calm_mini.experiments.kv import build_base_models
from calm_mini.experiments.kv import ExperimentConfig, compose_kv, train_bridges

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("--steps", type=int, default=12)
parser.add_argument("--stop-at", type=int, default=0)
args = parser.parse_args()

cfg = ExperimentConfig.classroom()
cfg = replace(cfg, bridges=replace(cfg.bridges, steps=args.steps, checkpoint_every=4, eval_every=0, warmup_steps=2))
processes = Accelerator()
with processes.main_process_first():
    base = build_base_models(cfg.kv, cfg.anchor, cfg.augmenting, progress=False)
model = compose_kv(base, cfg)
if args.stop_at:
    calls = 0

    def crash(module, inputs):
        global calls
        calls += 1
        if calls == args.stop_at:
            raise KeyboardInterrupt(f"stopped at step {args.stop_at}")

    model.bridges[0].register_forward_pre_hook(crash)
log = train_bridges(model, base, cfg, args.out / "checkpoints", progress=False)
state = {k: v.contiguous() for k, v in model.bridges.state_dict().items()}
save_file(state, args.out / f"rank{processes.process_index}.safetensors")
print(f"rank {processes.process_index} of {processes.num_processes}: final loss {log[-1]['loss']:.4f}")
