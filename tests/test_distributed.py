"""The distributed path, proven on CPU: two processes under ``accelerate launch`` train the
classroom bridges with DDP (gloo). Both processes must end with identical bridges, and a run
that crashes and is launched again must end exactly where an uninterrupted run ends.

accelerate 1.15's ``--cpu`` flag starts several processes only through MPI; without MPI its
torchrun launcher (``--multi_gpu``) with ``ACCELERATE_USE_CPU=1`` gives each process the CPU
and the gloo backend. On GPUs the same script runs with plain ``--multi_gpu``."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("distributed_train.py")
ACCELERATE = Path(sys.executable).with_name("accelerate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not ACCELERATE.exists(), reason="the accelerate CLI is not installed next to this Python")
def test_two_processes_train_identical_bridges_and_resume_exactly(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    launch(str(SCRIPT), str(whole))
    rank0, rank1 = load_file(whole / "rank0.safetensors"), load_file(whole / "rank1.safetensors")
    assert same(rank0, rank1)
    assert rank0["0.out.weight"].abs().sum() > 0  # the bridges trained (W^O starts at zero)

    crashed = launch(str(SCRIPT), str(broken), "--stop-at", "10", check=False)
    assert crashed.returncode != 0 and not (broken / "rank0.safetensors").exists()
    assert (broken / "checkpoints" / "checkpoint-000008").is_dir()  # the last complete checkpoint
    launch(str(SCRIPT), str(broken))
    assert same(load_file(broken / "rank0.safetensors"), rank0)
    assert same(load_file(broken / "rank1.safetensors"), rank0)


@pytest.mark.skipif(not ACCELERATE.exists(), reason="the accelerate CLI is not installed next to this Python")
def test_the_cli_runs_under_accelerate_launch_and_only_the_main_process_writes(tmp_path):
    """The base models are trained by the main process alone (the others wait, then load them),
    so a fresh cache must not deadlock; the table is written once."""
    result = launch("-m", "calm_mini", "reproduce", "--setting", "smoke", "--quiet", "--assets", str(tmp_path / "assets"),
                    "--checkpoints", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))
    assert result.stdout.count("Exact match (%)") == 1
    assert (tmp_path / "assets" / "kv_results_smoke.json").exists() and (tmp_path / "runs" / "bridges").is_dir()
