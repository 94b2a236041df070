"""The hot path of composition: what a composed call costs beyond running both models.

    python benchmarks/hot_path.py                        # both pairs, 2 CPU threads (minutes)
    python benchmarks/hot_path.py --quick --json /tmp/hot_path.json   # seconds (for tests)

Two pairs of tiny random Gemma models (widths × layers), each composed with 2 bridges
(``Evenly(2)``) whose output projections are random (at initialisation W^O = 0):

- small: anchor 256 × 8 ← augmenting 128 × 4;
- large: anchor 512 × 12 ← augmenting 256 × 6.

They keep Gemma's proportions (its 2B and 7B models): an MLP ``--mlp-ratio`` = 8 times the width,
64-wide heads, as many key/value heads as query heads. What composition costs is relative to
what the models cost, so the proportions decide the figures: ``--mlp-ratio 2`` (the MLP of
``calm_mini.models.tiny``) makes the models cheaper and the bridges' share larger.

Figures, all measured in this one run (ratios, not absolute times):

- forward: composed forward ÷ (anchor forward + augmenting backbone forward) on a
  ``--batch`` × ``--length`` batch, no cache; target ≤ 1.05. Medians of interleaved repeats.
- decode: (anchor + augmenting seconds) ÷ composed seconds for ``--new-tokens`` tokens decoded one
  at a time with the cache after a ``--prompt``-token prompt (not timed); target ≥ 0.97. The
  three models decode in lockstep: every step times each of them in turn (in a rotating order),
  on the same pre-drawn tokens, so that machine noise hits all alike and they do the same work
  whatever the random weights predict. The figure at N tokens sums the first N steps, each the
  median of its ``--repeats`` runs.

Beside them, ``official`` times the forward the way the official implementation
(google-deepmind/calm, ``model/layers.py``) computes it, rebuilt here on the same models and
layer pairs (:class:`OfficialStyle`), so that both sides print in one run. Decoding has no
official figure: that code feeds m_A only the new token and keeps none of its earlier states.

``bridges`` times the bridges' own arithmetic alone (keys/values of the new tokens,
cross-attention, W^O; no hooks, checks or reading), in the same interleaving. ``floor`` is the
ratio composition would have if it cost only that: the targets are out of reach where the
floor misses them, and composed minus floor is the plumbing.

Decoding one sequence is bound by memory traffic, not arithmetic: each step reads every weight
once, so ``weights`` gives the parameters of the models and of the bridges, and
``weights_floor`` the decode ratio of a step that costs only its weight reads.

On Linux, part of the forward's plumbing can be glibc handing memory back to the system between
calls (page faults on the next one): ``MALLOC_MMAP_THRESHOLD_=1000000000
MALLOC_TRIM_THRESHOLD_=1000000000`` (or jemalloc) in the environment shows the figures without it.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import _harness as h
import torch
from torch import nn
from transformers import GemmaConfig

from calm_mini import compose
from calm_mini.core import Evenly
from calm_mini.core.hooks import on_layer_output
from calm_mini.core.state import GrowingKV
from calm_mini.models.catalogue import random_model

# (hidden size, layers, heads) of the anchor and the augmenting model; 64-wide heads.
PAIRS = {
    "small": {"anchor": (256, 8, 4), "augmenting": (128, 4, 2)},
    "large": {"anchor": (512, 12, 8), "augmenting": (256, 6, 4)},
}
QUICK_PAIRS = {"quick": {"anchor": (64, 2, 2), "augmenting": (32, 2, 1)}}
TARGETS = {"forward_ratio_at_most": 1.05, "decode_ratio_at_least": 0.97}
VOCAB = 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    p.add_argument("--batch", type=int, default=4, help="forward: sequences per batch")
    p.add_argument("--length", type=int, default=128, help="forward: tokens per sequence")
    p.add_argument("--prompt", type=int, default=128, help="decode: prompt tokens before the timed steps")
    p.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256, 1024], help="decode: figures at these")
    p.add_argument("--repeats", type=int, default=3, help="decode runs (forward: 10× as many); medians are kept")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--mlp-ratio", type=int, default=8, help="MLP width ÷ model width (Gemma's: 8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: seconds on a CPU (for tests)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.dtype, args.anchor = "fp32", "tiny gemma"  # what h.environment reports
    if args.quick:
        args.pairs, args.batch, args.length, args.prompt = list(QUICK_PAIRS), 2, 16, 8
        args.new_tokens, args.repeats = [2, 4, 8], min(args.repeats, 2)
    return args


def gemma(sizes: tuple[int, int, int], mlp_ratio: int, max_positions: int, device: str, seed: int) -> nn.Module:
    """A random Gemma causal LM of (width, layers, heads) with 64-wide heads."""
    width, layers, heads = sizes
    config = GemmaConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, head_dim=width // heads, intermediate_size=mlp_ratio * width,
                         vocab_size=VOCAB, max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)  # fmt: skip
    return random_model(config, device=device, seed=seed)


def build_pair(sizes: dict, mlp_ratio: int, max_positions: int, device: str):
    """(composed model, anchor, augmenting): random tiny Gemmas, 2 bridges with random W^O."""
    anchor = gemma(sizes["anchor"], mlp_ratio, max_positions, device, seed=1)
    augmenting = gemma(sizes["augmenting"], mlp_ratio, max_positions, device, seed=2)
    model = compose(anchor, augmenting, layers=Evenly(2))
    h.randomize_outputs(model)
    return model, anchor, augmenting


class OfficialStyle:
    """The official implementation's composed forward, rebuilt for timing on the same models and
    layer pairs: a hook keeps each mapped m_A layer's output while the whole m_A runs (its LM
    head included), then a hook after each mapped anchor layer adds f_proj applied twice (once
    for the keys, once for the values), ``nn.MultiheadAttention`` with ``need_weights=True``
    over every augmenting position (no mask), and an RMS norm of its output. Its weights are
    random: only its cost is measured. Called like a model, without a cache."""

    def __init__(self, model, anchor, augmenting, dtype: torch.dtype = torch.float32):
        self.anchor, self.augmenting, self.specs = anchor, augmenting, model.specs
        device, heads = anchor.device, model.calm_config.num_heads
        self.bridges = [nn.ModuleDict({
            "proj": nn.Linear(augmenting.config.hidden_size, anchor.config.hidden_size),
            "attention": nn.MultiheadAttention(anchor.config.hidden_size, heads, batch_first=True),
            "norm": nn.RMSNorm(anchor.config.hidden_size, eps=anchor.config.rms_norm_eps),
        }).to(device, dtype) for _ in self.specs]  # fmt: skip

    def _add_bridge(self, bridge: nn.ModuleDict, read: dict, b: int, hidden: torch.Tensor) -> torch.Tensor:
        keys, values = bridge["proj"](read[b]), bridge["proj"](read[b])  # (B, S, D_B), as the official code
        heads, _ = bridge["attention"](hidden, keys, values, need_weights=True)
        return hidden + bridge["norm"](heads)

    def __call__(self, ids: torch.Tensor, cache: None) -> SimpleNamespace:
        read: dict[int, torch.Tensor] = {}
        a_layers, b_layers = self.augmenting.model.layers, self.anchor.model.layers
        handles = [on_layer_output(a_layers, s.augmenting_layer, functools.partial(read.__setitem__, b))
                   for b, s in enumerate(self.specs)]  # fmt: skip
        handles += [on_layer_output(b_layers, s.anchor_layer, functools.partial(self._add_bridge, bridge, read, b))
                    for b, (s, bridge) in enumerate(zip(self.specs, self.bridges))]  # fmt: skip
        try:
            self.augmenting(ids, use_cache=False)
            return SimpleNamespace(logits=self.anchor(ids, use_cache=False).logits, cache=None)
        finally:
            for handle in handles:
                handle.remove()


class BridgesAlone:
    """The bridges' own arithmetic without the rest of the composition (no augmenting or anchor
    run, no hooks, no checks), called like a model: ``step(ids (B, n), cache or None)``. For the
    n new tokens each bridge projects augmenting states to keys/values, appends them to its
    cache, and attends from anchor states in the plain causal order. The states are random
    (drawn once per shape): the arithmetic does not depend on their values."""

    def __init__(self, model):
        self.bridges = model.bridges
        self.device = next(model.bridges.parameters()).device
        self._random: dict[tuple[int, ...], torch.Tensor] = {}

    def _states(self, *shape: int) -> torch.Tensor:
        if shape not in self._random:
            self._random[shape] = torch.randn(*shape, device=self.device)
        return self._random[shape]

    def __call__(self, ids: torch.Tensor, cache: list | None) -> SimpleNamespace:
        batch, new = ids.shape
        cache = cache or [None] * len(self.bridges)  # per bridge: (GrowingKV keys, GrowingKV values)
        for b, bridge in enumerate(self.bridges):
            keys, values = bridge.keys_values(self._states(batch, new, bridge.proj.in_features))  # (B, H, n, d)
            if cache[b] is None:
                cache[b] = GrowingKV(keys), GrowingKV(values)
            else:
                cache[b][0].append(keys)
                cache[b][1].append(values)
            bridge(self._states(batch, new, bridge.proj.out_features), cache[b][0].filled, cache[b][1].filled)
        return SimpleNamespace(cache=cache)


def calls(model, anchor, augmenting, use_cache: bool) -> dict[str, Callable]:
    """One call of each: ``step(ids (B, n), cache or None)`` returns an output with ``.cache``."""
    return {
        "composed": lambda x, cache: model(x, cache=cache, use_cache=use_cache),
        "anchor": lambda x, cache: anchor(x, cache=cache, use_cache=use_cache),
        "augmenting": lambda x, cache: augmenting.base_model(x, cache=cache, use_cache=use_cache),
        "bridges": BridgesAlone(model),
    }


@torch.no_grad()
def forward_seconds(steps: dict[str, Callable], ids: torch.Tensor, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of one uncached forward of each, interleaved."""
    return h.interleaved({name: functools.partial(step, ids, None) for name, step in steps.items()}, repeats, device)


@torch.no_grad()
def decode_lockstep(steps: dict[str, Callable], prompt: torch.Tensor, tokens: torch.Tensor,
                    device: str) -> dict[str, list[float]]:  # fmt: skip
    """Prefill each with ``prompt`` (B, T) (not timed), then feed ``tokens`` (B, N) one at a
    time, timing each model's step in turn. Returns the seconds of each model's N steps."""
    caches = {name: step(prompt, None).cache for name, step in steps.items()}
    names = list(steps)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(tokens.shape[1]):
        x = tokens[:, i : i + 1]
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate who goes first
            h.synchronize(device)
            start = time.perf_counter()
            caches[name] = steps[name](x, caches[name]).cache
            h.synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def decode_seconds(steps: dict[str, Callable], prompt, tokens, new_tokens: list[int], repeats: int,
                   device: str) -> dict[int, dict[str, float]]:  # fmt: skip
    """Seconds of each model for the first N decoded tokens, for each N in ``new_tokens``: the
    sum over steps of each step's median over ``repeats`` runs (a stall of the machine then has
    to hit most runs at the same step to count)."""
    decode_lockstep(steps, prompt, tokens[:, :4], device)  # warm-up
    runs = [decode_lockstep(steps, prompt, tokens, device) for _ in range(repeats)]
    medians = {name: [statistics.median(step) for step in zip(*(run[name] for run in runs))] for name in steps}
    return {n: {name: sum(m[:n]) for name, m in medians.items()} for n in new_tokens}


def weights(model) -> dict[str, int]:
    """Parameters a decoding step reads: the anchor's (its LM head included), m_A's backbone's, the bridges'."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"anchor": count(model.anchor), "augmenting": count(model.augmenting[0].base_model),
            "bridges": count(model.bridges)}  # fmt: skip


def measure_pair(sizes: dict, args: argparse.Namespace) -> dict:
    """The forward and decode figures of one pair."""
    longest = max(args.new_tokens)
    model, anchor, augmenting = build_pair(sizes, args.mlp_ratio, args.prompt + longest, args.device)
    ids = h.token_ids(VOCAB, args.batch, args.length, args.device)
    steps = {**calls(model, anchor, augmenting, use_cache=False), "official": OfficialStyle(model, anchor, augmenting)}
    forward = forward_seconds(steps, ids, 10 * args.repeats, args.device)
    stream = h.token_ids(VOCAB, 1, args.prompt + longest, args.device, seed=1)
    prompt, tokens = stream[:, : args.prompt], stream[:, args.prompt :]
    decode = decode_seconds(calls(model, anchor, augmenting, use_cache=True), prompt, tokens, args.new_tokens,
                            args.repeats, args.device)  # fmt: skip
    params = weights(model)
    forward_figures = figures(forward, speed=False)
    forward_figures["official_ratio"] = forward["official"] / (forward["anchor"] + forward["augmenting"])
    return {
        "anchor": dict(zip(("hidden_size", "layers", "heads"), sizes["anchor"])),
        "augmenting": dict(zip(("hidden_size", "layers", "heads"), sizes["augmenting"])),
        "layer_map": [[s.augmenting_layer, s.anchor_layer] for s in model.specs],
        "weights": params,
        "weights_floor": (params["anchor"] + params["augmenting"]) / sum(params.values()),
        "forward": forward_figures,
        "decode": {str(n): figures(s, speed=True) for n, s in decode.items()},
    }


def figures(seconds: dict[str, float], speed: bool) -> dict:
    """The ratio composed ÷ sum of parts in seconds (``speed``: its inverse, in tokens/s), and the
    floor: that ratio were composition to cost only the bridges' arithmetic (the rest is hooks,
    reading and checks: the plumbing)."""
    parts = seconds["anchor"] + seconds["augmenting"]
    ratio, floor = seconds["composed"] / parts, (parts + seconds["bridges"]) / parts
    if speed:
        ratio, floor = 1 / ratio, 1 / floor
    return {"seconds": seconds, "ratio": ratio, "floor": floor}


def table(pairs: dict[str, dict], args: argparse.Namespace) -> list[str]:
    """The readable lines: one row per pair and figure, with its target."""
    columns = ("composed", "anchor", "augmenting", "bridges")
    header = "".join(f"{c:>10}" for c in ("composed", "anchor", "augment.", "bridges"))
    lines = [f"{'pair':<24} {'figure':<30}{header}{'ratio':>8}{'floor':>7}  target"]
    for name, r in pairs.items():
        a, b = r["anchor"], r["augmenting"]
        label = f"{name}: {a['hidden_size']}×{a['layers']} ← {b['hidden_size']}×{b['layers']}"
        rows = [(f"forward {args.batch}×{args.length} (ms)", r["forward"], 1000.0, TARGETS["forward_ratio_at_most"])]
        rows += [(f"decode {n} new tokens (ms/step)", d, 1000.0 / int(n), TARGETS["decode_ratio_at_least"])
                 for n, d in r["decode"].items()]  # fmt: skip
        for i, (figure, d, scale, target) in enumerate(rows):
            at_most = i == 0
            ok = d["ratio"] <= target if at_most else d["ratio"] >= target
            times = "".join(f"{scale * d['seconds'][c]:10.3f}" for c in columns)
            verdict = f"{'≤' if at_most else '≥'} {target:.2f} {'met' if ok else 'NOT met'}"
            lines.append(f"{label:<24} {figure:<30}{times}{d['ratio']:8.3f}{d['floor']:7.3f}  {verdict}")
        f, w = r["forward"], r["weights"]
        lines.append(f"{label:<24} {'official-style forward (ms)':<30}{1000 * f['seconds']['official']:10.3f}"
                     f"{'':30}{f['official_ratio']:8.3f}  ours {f['ratio']:.3f}: "
                     f"{'no worse' if f['ratio'] <= f['official_ratio'] else 'WORSE'}")  # fmt: skip
        lines.append(f"{label:<24} weights read per decoding step: bridges {w['bridges']:,} = "
                     f"{100 * w['bridges'] / (w['anchor'] + w['augmenting']):.1f} % of the models'; weights floor "
                     f"{r['weights_floor']:.3f}")  # fmt: skip
    lines += [
        "forward ratio = composed ÷ (anchor + augmenting); decode ratio = (anchor + augmenting) ÷ composed",
        "bridges: their arithmetic alone; floor: the ratio were composition to cost only that",
        "weights floor: the decode ratio of a step that costs only reading its weights once",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK_PAIRS if args.quick else PAIRS
    pairs = {name: measure_pair(sizes[name], args) for name in args.pairs}
    results = {
        "benchmark": "hot_path",
        "environment": h.environment(args),
        "setting": {"batch": args.batch, "length": args.length, "prompt": args.prompt, "decode_batch": 1,
                    "new_tokens": args.new_tokens, "repeats": args.repeats, "bridges": 2, "vocab_size": VOCAB,
                    "mlp_ratio": args.mlp_ratio},  # fmt: skip
        "pairs": pairs,
        "targets": TARGETS,
    }
    env = results["environment"]
    lines = [f"composition hot path, fp32 on {env['device_name']}, {env['threads']} threads, torch {env['torch']}",
             *table(pairs, args)]  # fmt: skip
    h.finish(args, results, lines)


if __name__ == "__main__":
    main()
