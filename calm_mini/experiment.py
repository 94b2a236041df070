"""The key-value arithmetic experiment (the paper's Table 1) and its ablations, end to end.

    reproduce(ExperimentConfig.classroom())   # data, base models, bridges, Table 1
    ablations(ExperimentConfig.classroom())   # same budget: random/vanilla/encoder m_A, LoRA, FT, placement

Why the classroom design works (the README tells the story):

* keys are single tokens and m_A learns ``kaz7`` (the value right after the key), so m_A's
  state *at the key token* holds the value;
* a bridge into the anchor's embeddings (layer -1) lets the value reach the anchor before its
  first layer, where the anchor reads operands; more bridges after each anchor layer help it
  keep the value;
* the recency bias lets a bridge read the augmenting state of its own token: without it, an
  anchor token that is a key the anchor has never seen cannot ask for "my" state by content;
* D_C mixes NUM-MATH with KV-MATH so the bridges learn to stay silent on plain numbers.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from datasets import concatenate_datasets
from torch import nn

from .basemodels import BaseModelConfig, BaseModels, build_base_models, load_or_train
from .compose import ComposedModel, compose
from .data import KVConfig
from .evaluate import exact_match
from .files import atomic_write
from .models import tiny_like
from .train import TrainConfig, encode_examples, train

# Table rows: what each evaluation set measures, and the paper's numbers (Table 1) beside ours.
TASKS = {
    "KV-SUBS": "eval_kv_subs",
    "NUM-MATH": "eval_num_math",
    "KV-MATH": "eval_kv_math_heldout",
    "KV-MATH (D_C keys)": "eval_kv_math_dc",
}
PAPER = {
    "KV-SUBS": {"m_A": 98.1, "m_B": 0.0, "CALM": 92.9},
    "NUM-MATH": {"m_A": 4.2, "m_B": 73.7, "CALM": 72.0},
    "KV-MATH": {"m_A": 0.7, "m_B": 0.0, "CALM": 84.3},
}
# The classroom placement: embeddings and every anchor layer but the last, all fed from m_A's last layer.
CLASSROOM_LAYERS = ((1, -1), (1, 0), (1, 1), (1, 2))
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


SETTINGS = ("classroom", "full", "smoke")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that decides the experiment; ``classroom()`` runs on 2 CPU cores in minutes."""

    setting: str = "classroom"
    kv: KVConfig = field(default_factory=KVConfig.classroom)
    anchor: BaseModelConfig = field(default_factory=BaseModelConfig.anchor_classroom)
    augmenting: BaseModelConfig = field(default_factory=BaseModelConfig.augmenting_classroom)
    layers: tuple[tuple[int, int], ...] = CLASSROOM_LAYERS
    recency_bias: bool = True
    bridges: TrainConfig = TrainConfig(steps=1200, batch_size=64, lr=3e-3, warmup_steps=20, log_every=50,
                                       eval_every=300)
    eval_batch_size: int = 100

    @classmethod
    def classroom(cls, **overrides) -> "ExperimentConfig":
        return replace(cls(), **overrides)

    @classmethod
    def full(cls, **overrides) -> "ExperimentConfig":
        """Closer to the paper (3–6 operands, + − ×, values 0–99); needs a GPU."""
        base = cls(
            setting="full",
            kv=KVConfig.full(),
            anchor=BaseModelConfig(n_layers=8, d_model=256, n_heads=8, d_ff=1024, steps=20_000, batch_size=256),
            augmenting=BaseModelConfig(n_layers=4, d_model=128, n_heads=4, d_ff=512, steps=10_000, batch_size=256),
            layers=((3, -1), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6)),
            bridges=TrainConfig(steps=10_000, batch_size=256, lr=1e-3, warmup_steps=200, log_every=100,
                                eval_every=1000),
        )
        return replace(base, **overrides)

    @classmethod
    def smoke(cls, **overrides) -> "ExperimentConfig":
        """Seconds on a CPU: checks that the pipeline runs (what the tests use), learns nothing."""
        base = cls(
            setting="smoke",
            kv=KVConfig.classroom(n_keys=40, n_anchor_train=40, n_dc_train=64, n_eval=8, n_eval_kv_math=8),
            anchor=BaseModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64, steps=20, batch_size=16),
            augmenting=BaseModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64, steps=20, batch_size=16),
            layers=((1, -1), (1, 0)),
            bridges=TrainConfig(steps=10, batch_size=16, warmup_steps=2, log_every=5, eval_every=5),
        )
        return replace(base, **overrides)

    @classmethod
    def named(cls, setting: str, **overrides) -> "ExperimentConfig":
        if setting not in SETTINGS:
            raise ValueError(f"Unknown setting {setting!r}: choose one of {', '.join(SETTINGS)}.")
        return getattr(cls, setting)(**overrides)


# ---------------------------------------------------------------------- evaluation
def evaluate(models: dict[str, nn.Module], base: BaseModels, batch_size: int = 100, tasks=TASKS) -> dict:
    """Exact-match accuracy (%) of each model on each task: ``{task: {model: accuracy}}``."""
    return {
        task: {
            name: round(100 * exact_match(model, base.data.tokenizer, base.data.splits[split], batch_size), 1)
            for name, model in models.items()
        }
        for task, split in tasks.items()
    }


def format_table(rows: dict[str, dict[str, float]], paper: dict | None = PAPER, row_label: str = "task") -> str:
    """A Markdown table: one row per key of ``rows``, one column per inner key; where ``paper``
    has a value for (row, column) it is shown in brackets."""
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))

    def cell(row: str, column: str) -> str:
        value = rows[row].get(column)
        text = f"{value:.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value or "")
        ref = (paper or {}).get(row, {}).get(column)
        return text + (f" (paper {ref:.1f})" if ref is not None else "")

    table = [[row_label, *columns]] + [[row, *(cell(row, c) for c in columns)] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
             for r in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# ---------------------------------------------------------------------- training the bridges
def compose_kv(base: BaseModels, cfg: ExperimentConfig, layers=None, augmenting: nn.Module | None = None) -> ComposedModel:
    """The composition of the experiment (or a variant: other layers, another m_A); the bridges'
    initial weights are seeded by ``cfg.bridges.seed``, so a run is reproducible."""
    torch.manual_seed(cfg.bridges.seed)
    return compose(
        base.anchor,
        augmenting if augmenting is not None else base.augmenting,
        layers=[tuple(p) for p in (layers or cfg.layers)],
        recency_bias=cfg.recency_bias,
    )


def kv_math_accuracy(model: nn.Module, base: BaseModels, batch_size: int = 100) -> dict[str, float]:
    """The metric logged while training: KV-MATH accuracy on held-out keys, in %."""
    return {"kv_math_heldout": 100 * exact_match(model, base.data.tokenizer, base.data.splits["eval_kv_math_heldout"],
                                                 batch_size)}


def train_bridges(
    model: nn.Module, base: BaseModels, cfg: ExperimentConfig, output_dir: str | Path | None = None,
    data: dict[str, torch.Tensor] | None = None, progress: bool = True, desc: str = "bridges",
) -> list[dict]:
    """Train ``model``'s trainable parameters on D_C (KV-MATH over 20 % of keys + NUM-MATH)."""
    data = data if data is not None else encode_examples(base.data.splits["dc_train"], base.data.tokenizer)
    evaluate_fn = (lambda: kv_math_accuracy(model, base, cfg.eval_batch_size)) if cfg.bridges.eval_every else None
    return train(model, data, cfg.bridges, output_dir=output_dir, evaluate=evaluate_fn, progress=progress, desc=desc)


def reproduce(
    cfg: ExperimentConfig, assets: str | Path = "assets", cache_dir: str | Path | None = None,
    checkpoints: str | Path | None = None, progress: bool = True, tasks: dict[str, str] = TASKS,
) -> dict:
    """Table 1: data, base models (cached), bridges, evaluation of m_A, m_B and CALM.

    With ``checkpoints``, bridge training saves there and resumes from there (after a Ctrl-C,
    run the same call again). Writes ``kv_results.json`` and the figures to ``assets`` and
    returns the results dict.

    Under ``accelerate launch`` the main process trains the base models first (the others
    then load them from the cache), every process trains the bridges on its share of each
    batch, and only the main process evaluates and writes; the others return ``{}``.
    """
    start = time.perf_counter()
    processes = Accelerator()  # one process, or one of several under `accelerate launch`
    with processes.main_process_first():
        base = build_base_models(cfg.kv, cfg.anchor, cfg.augmenting, cache_dir, progress)
    base_seconds = time.perf_counter() - start
    model = compose_kv(base, cfg)
    log = train_bridges(model, base, cfg, checkpoints, progress=progress)
    if not processes.is_main_process:
        return {}
    if checkpoints is not None:
        model.save_pretrained(Path(checkpoints) / "bridges")
    results = evaluate({"m_A": base.augmenting, "m_B": base.anchor, "CALM": model}, base, cfg.eval_batch_size, tasks)
    report = {
        "setting": cfg.setting,
        "config": _jsonable(cfg),
        "table": results,
        "paper": PAPER,
        "log": log,
        "bridge_parameters": model.num_bridge_parameters(),
        "anchor_parameters": sum(p.numel() for p in base.anchor.parameters()),
        "seconds": {"base_models": round(base_seconds, 1), "total": round(time.perf_counter() - start, 1)},
        "summary": model.summary(),
    }
    _write(report, Path(assets) / "kv_results.json")
    _figures(report, Path(assets), "kv")
    return report


# ---------------------------------------------------------------------- ablations
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


class EncoderAblation(nn.Module):
    """The composition with m_A as an encoder of the prompt only (read once), as in the paper's
    ablation: training batches carry ``encoder_ids``/``encoder_mask``; ``generate`` reads the prompt."""

    def __init__(self, model: ComposedModel):
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)

    def generate(self, input_ids, attention_mask=None, **kwargs):
        return self.model.generate(input_ids, attention_mask, encoder_ids=input_ids, encoder_mask=attention_mask,
                                   **kwargs)


def encode_with_prompts(dataset, tokenizer) -> dict[str, torch.Tensor]:
    """:func:`encode_examples` plus the prompt alone (right-padded) for the encoder ablation."""
    data = encode_examples(dataset, tokenizer)
    prompts = tokenizer(list(dataset["prompt"]))["input_ids"]
    width = max(map(len, prompts))
    data["encoder_ids"] = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    data["encoder_mask"] = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        data["encoder_ids"][i, : len(p)] = torch.tensor(p)
        data["encoder_mask"][i, : len(p)] = 1
    return data


def ablations(
    cfg: ExperimentConfig, assets: str | Path = "assets", cache_dir: str | Path | None = None,
    progress: bool = True, placements: dict | None = None,
) -> dict:
    """Every variant trains the same number of parameters (the bridges' count) on the same D_C.

    Returns ``{"variants": {name: {task: acc}}, "placement": {name: {...}}}`` and writes
    ``kv_ablations.json`` and figures to ``assets``.
    """
    base = build_base_models(cfg.kv, cfg.anchor, cfg.augmenting, cache_dir, progress)
    tokenizer, splits = base.data.tokenizer, base.data.splits
    tasks = {k: v for k, v in TASKS.items() if k in ("NUM-MATH", "KV-MATH")}
    variants: dict[str, dict] = {}

    def run(name: str, model: nn.Module, data=None) -> None:
        start = time.perf_counter()
        log = train_bridges(model, base, replace(cfg, bridges=replace(cfg.bridges, eval_every=0)), data=data,
                            progress=progress, desc=name)
        scores = evaluate({name: model}, base, cfg.eval_batch_size, tasks)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        variants[name] = {t: scores[t][name] for t in tasks} | {
            "trainable": trainable, "final_loss": round(log[-1]["loss"], 4), "seconds": round(time.perf_counter() - start)}

    calm = compose_kv(base, cfg)
    run("CALM", calm)
    budget = calm.num_bridge_parameters()
    torch.manual_seed(cfg.anchor.seed)
    run("random m_A", compose_kv(base, cfg, augmenting=tiny_like(base.augmenting)))
    vanilla = load_or_train("vanilla", base.data, cfg.augmenting, cache_dir, progress)
    run("vanilla m_A", compose_kv(base, cfg, augmenting=vanilla))
    run("m_A as encoder", EncoderAblation(compose_kv(base, cfg)), encode_with_prompts(splits["dc_train"], tokenizer))
    run("LoRA on m_B", lora_anchor(base.anchor, budget))
    skyline = copy.deepcopy(base.anchor).requires_grad_(True)
    everything = concatenate_datasets([splits["dc_train"], splits["augmenting_train"]]).shuffle(seed=0)
    run("fine-tuned m_B (skyline)", skyline, encode_examples(everything, tokenizer))

    placement: dict[str, dict] = {}
    for name, layers in (placements if placements is not None else placement_study(cfg)).items():
        for recency in (False, True):
            model = compose_kv(base, replace(cfg, recency_bias=recency), layers=layers)
            label = f"{name}{' + recency' if recency else ''}"
            log = train_bridges(model, base, replace(cfg, bridges=replace(cfg.bridges, eval_every=0)),
                                progress=progress, desc=label)
            scores = evaluate({label: model}, base, cfg.eval_batch_size, tasks)
            placement[label] = {t: scores[t][label] for t in tasks} | {
                "bridges": len(layers), "layers": [list(p) for p in layers], "recency_bias": recency,
                "trainable": model.num_bridge_parameters(), "final_loss": round(log[-1]["loss"], 4)}
    report = {"setting": cfg.setting, "config": _jsonable(cfg), "budget": budget, "variants": variants,
              "placement": placement}
    _write(report, Path(assets) / "kv_ablations.json")
    _figures(report, Path(assets), "ablations")
    return report


# ---------------------------------------------------------------------- output
def _jsonable(cfg: ExperimentConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def _write(report: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))


def _figures(report: dict, assets: Path, kind: str) -> list[Path]:
    """Save the report's charts as offline HTML under ``assets/figures`` (not committed)."""
    from . import viz

    figures = assets / "figures"
    written = []
    if kind == "kv":
        written += viz.save_figure(viz.results_chart(report["table"], "Table 1, reproduced (exact match %)"),
                                   figures / "kv_table1.html", png=False)
        written += viz.save_figure(viz.training_curves(report["log"], "bridge training"),
                                   figures / "kv_training.html", png=False)
    else:
        written += viz.save_figure(viz.results_chart(_by_task(report["variants"]), "Ablations (same budget)"),
                                   figures / "kv_ablations.html", png=False)
        written += viz.save_figure(viz.results_chart(_by_task(report["placement"]), "Bridge placement"),
                                   figures / "kv_placement.html", png=False)
    return written


def _by_task(rows: dict) -> dict:
    """{variant: {task: acc, ...}} → {task: {variant: acc}} for the charts."""
    tasks = ("NUM-MATH", "KV-MATH")
    return {t: {name: row[t] for name, row in rows.items()} for t in tasks}
