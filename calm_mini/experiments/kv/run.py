"""The key-value arithmetic experiment (the paper's Table 1), end to end.

    reproduce(ExperimentConfig.classroom())   # data, base models, bridges, Table 1

Why the classroom design works (the README tells the story):

* keys are single tokens and m_A learns ``kaz7`` (the value right after the key), so m_A's
  state *at the key token* holds the value;
* a bridge into the anchor's embeddings (layer -1) lets the value reach the anchor before its
  first layer, where the anchor reads operands; more bridges after each anchor layer help it
  keep the value;
* the recency bias lets a bridge read the augmenting state of its own token: without it, an
  anchor token that is a key the anchor has never seen cannot ask for "my" state by content;
* normalised bridge inputs (``normalize_inputs``) make every bridge's output count in units of
  the anchor state it is added to: the embeddings are far smaller than the later layers'
  states, so with one learning rate the raw embeddings bridge drowns the digits it is added to
  and the composite forgets the anchor's arithmetic on some seeds;
* D_C mixes NUM-MATH with KV-MATH so the bridges learn to stay silent on plain numbers, and
  KV-SUBS over D_C keys so the composition learns to answer a bare key with its value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
from accelerate import Accelerator
from torch import nn

from ...core import ComposedModel, compose
from ...evaluation import exact_match
from ...training import TrainConfig, encode_examples, train
from ..reports import NamedSettings, caption, mean_table, provenance, spread, write_report
from .base_models import BASE_TRAINING, BaseModelConfig, BaseModels, build_base_models
from .data import KVConfig

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


@dataclass(frozen=True)
class ExperimentConfig(NamedSettings):
    """Everything that decides the experiment; ``classroom()`` runs on 2 CPU cores in minutes."""

    SETTINGS = ("classroom", "paper_cpu", "full", "smoke")

    setting: str = "classroom"
    kv: KVConfig = field(default_factory=KVConfig.classroom)
    anchor: BaseModelConfig = field(default_factory=BaseModelConfig.anchor_classroom)
    augmenting: BaseModelConfig = field(default_factory=BaseModelConfig.augmenting_classroom)
    layers: tuple[tuple[int, int], ...] = CLASSROOM_LAYERS
    recency_bias: bool = True
    normalize_inputs: bool = True
    bridges: TrainConfig = TrainConfig(steps=1200, batch_size=64, lr=3e-3, warmup_steps=20, log_every=50,
                                       eval_every=300)
    eval_batch_size: int = 100

    @classmethod
    def paper_cpu(cls, **overrides) -> "ExperimentConfig":
        """Harder, still on 2 CPU cores (under 15 minutes): 1,000 keys, three operands, + − ×.
        m_A's batch holds a fifth of the keys, so it sees each key as often whatever their
        number; the anchor's and the bridges' budgets do not depend on the keys."""
        kv = KVConfig.paper_cpu()
        return replace(cls(
            setting="paper_cpu",
            kv=kv,
            anchor=BaseModelConfig.anchor_classroom(train=replace(BASE_TRAINING, steps=2000, batch_size=128,
                                                                  warmup_steps=100)),
            augmenting=BaseModelConfig.augmenting_classroom(train=replace(BASE_TRAINING, batch_size=kv.n_keys // 5)),
            bridges=TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup_steps=20, log_every=50, eval_every=500),
        ), **overrides)

    @classmethod
    def full(cls, **overrides) -> "ExperimentConfig":
        """Closer to the paper (3–6 operands, + − ×, values 0–99); needs a GPU."""
        base = cls(
            setting="full",
            kv=KVConfig.full(),
            anchor=BaseModelConfig(n_layers=8, d_model=256, n_heads=8, d_ff=1024,
                                   train=replace(BASE_TRAINING, steps=20_000, batch_size=256)),
            augmenting=BaseModelConfig(n_layers=4, d_model=128, n_heads=4, d_ff=512,
                                       train=replace(BASE_TRAINING, steps=10_000, batch_size=256)),
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
            anchor=BaseModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64,
                                   train=replace(BASE_TRAINING, steps=20, batch_size=16)),
            augmenting=BaseModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64,
                                       train=replace(BASE_TRAINING, steps=20, batch_size=16)),
            layers=((1, -1), (1, 0)),
            bridges=TrainConfig(steps=10, batch_size=16, warmup_steps=2, log_every=5, eval_every=5),
        )
        return replace(base, **overrides)


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
        normalize_inputs=cfg.normalize_inputs,
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


def seeded(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``cfg`` with every seed set to ``seed``: the data (keys, D_C, evaluation sets), both base
    models (weights and batches) and the bridges (initial weights and batches)."""
    return replace(
        cfg,
        kv=replace(cfg.kv, seed=seed),
        anchor=replace(cfg.anchor, train=replace(cfg.anchor.train, seed=seed)),
        augmenting=replace(cfg.augmenting, train=replace(cfg.augmenting.train, seed=seed)),
        bridges=replace(cfg.bridges, seed=seed),
    )


def report_name(setting: str) -> str:
    """The file a setting's Table 1 is written to: ``kv_results.json`` for the classroom setting,
    ``kv_results_SETTING.json`` for the others (so a harder run never overwrites the classroom's)."""
    return "kv_results.json" if setting == "classroom" else f"kv_results_{setting}.json"


def reproduce(
    cfg: ExperimentConfig, assets: str | Path = "assets", cache_dir: str | Path | None = None,
    checkpoints: str | Path | None = None, progress: bool = True, tasks: dict[str, str] = TASKS,
    seeds: Sequence[int] = (0,),
) -> dict:
    """Table 1: data, base models (cached), bridges, evaluation of m_A, m_B and CALM — once per
    seed in ``seeds`` (each seeds everything, :func:`seeded`).

    With ``checkpoints``, bridge training saves there and resumes from there (after a Ctrl-C,
    run the same call again); seeds other than 0 use ``CHECKPOINTS-seedS`` beside it. Writes
    :func:`report_name` (``kv_results.json`` for the classroom setting) and the figures to
    ``assets`` and returns the report: ``table`` (the mean
    over seeds; one seed's table for one seed), ``per_seed`` (each seed's table, log and
    seconds), with several seeds ``range`` (``{task: {model: {"mean", "min", "max"}}}``), and
    :func:`~calm_mini.experiments.reports.provenance` (config, its hash, version, seeds).

    Under ``accelerate launch`` the main process trains the base models first (the others
    then load them from the cache), every process trains the bridges on its share of each
    batch, and only the main process evaluates and writes; the others return ``{}``.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={list(seeds)}: give one or more distinct seeds, e.g. --seeds 5 or --seeds 0,1,2.")
    start = time.perf_counter()
    runs = [_one_seed(seeded(cfg, seed), cache_dir, _seed_folder(checkpoints, seed), progress, tasks)
            for seed in seeds]
    if not runs[0]:  # not the main process
        return {}
    tables = [run["table"] for run in runs]
    report = {
        "setting": cfg.setting, **provenance(cfg, seeds),
        "table": tables[0] if len(seeds) == 1 else mean_table(tables),
        **({"range": spread(tables)} if len(seeds) > 1 else {}),
        "paper": PAPER,
        "per_seed": [{"seed": seed, **{k: run[k] for k in ("table", "seconds", "log")}} for seed, run in zip(seeds, runs)],
        "log": runs[0]["log"],
        "bridge_parameters": runs[0]["bridge_parameters"],
        "anchor_parameters": runs[0]["anchor_parameters"],
        "seconds": {"total": round(time.perf_counter() - start, 1)},
        "summary": runs[0]["summary"],
    }
    write_report(report, Path(assets) / report_name(cfg.setting))
    save_figures(report, Path(assets), "kv")
    return report


def _seed_folder(checkpoints: str | Path | None, seed: int) -> Path | None:
    """Where seed ``seed``'s bridge checkpoints go: ``checkpoints`` itself for seed 0."""
    if checkpoints is None or seed == 0:
        return None if checkpoints is None else Path(checkpoints)
    return Path(f"{checkpoints}-seed{seed}")


def _one_seed(cfg: ExperimentConfig, cache_dir, checkpoints: Path | None, progress: bool, tasks: dict) -> dict:
    """One seed's run: base models, bridges, the table; ``{}`` on a process that is not the main one."""
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
        model.save_pretrained(checkpoints / "bridges")
    table = evaluate({"m_A": base.augmenting, "m_B": base.anchor, "CALM": model}, base, cfg.eval_batch_size, tasks)
    return {
        "table": table, "log": log,
        "seconds": {"base_models": round(base_seconds, 1), "total": round(time.perf_counter() - start, 1)},
        "bridge_parameters": model.num_bridge_parameters(),
        "anchor_parameters": sum(p.numel() for p in base.anchor.parameters()),
        "summary": model.summary(),
    }


# ---------------------------------------------------------------------- figures
def save_figures(report: dict, assets: Path, kind: str) -> list[Path]:
    """Save the report's charts as offline HTML under ``assets/figures`` (not committed); each
    title names the setting, the seed(s) and the kit's version (:func:`caption`)."""
    from ... import viz

    figures, about = assets / "figures", f" — {caption(report)}"
    written = []
    if kind == "kv":
        written += viz.save_figure(viz.results_chart(report["table"], "Table 1, reproduced (exact match %)" + about),
                                   figures / "kv_table1.html", png=False)
        written += viz.save_figure(viz.training_curves(report["log"], "bridge training" + about),
                                   figures / "kv_training.html", png=False)
    else:
        written += viz.save_figure(viz.results_chart(_by_task(report["variants"]), "Ablations (same budget)" + about),
                                   figures / "kv_ablations.html", png=False)
        written += viz.save_figure(viz.results_chart(_by_task(report["placement"]), "Bridge placement" + about),
                                   figures / "kv_placement.html", png=False)
    return written


def _by_task(rows: dict) -> dict:
    """{variant: {task: acc, ...}} → {task: {variant: acc}} for the charts."""
    tasks = ("NUM-MATH", "KV-MATH")
    return {t: {name: row[t] for name, row in rows.items()} for t in tasks}
