"""Compose your own models on your own data: what ``python -m calm_mini train`` does, as functions.

:func:`train_bridges` loads an anchor and an augmenting model (folders, hub names or
``"smollm2-135m-offline"``), composes them — through the cross-tokenizer path when their
vocabularies differ — tokenises your data (:mod:`calm_mini.training.data`), trains the bridges
with :func:`calm_mini.training.train` and writes, into the output folder::

    output/
      bridges.safetensors, calm_config.json   the bridges (ComposedModel.save_pretrained)
      README.md                               a Hugging Face-style model card
      calm_train.json                         the run's arguments and numbers, to reload the base models
      checkpoints/                            the latest checkpoint: rerunning the same call resumes

Every file is written under a temporary name and renamed into place, ``calm_train.json`` last,
so an error or Ctrl-C never leaves a half-written one; bad input is refused before anything is
written. Under ``accelerate launch`` the same call trains with DDP (each process on its share of
every batch) and only the main process writes. :func:`load_trained` rebuilds the trained
composition from such a folder; :func:`upload` publishes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..core import ComposedModel, compose
from ..core.factory import CROSS_TOKENIZER
from ..core.files import atomic_write
from ..core.saving import CONFIG_NAME, WEIGHTS_NAME, read_config
from ..models import load
from .card import model_card
from .config import TrainConfig
from .data import FORMATS, IGNORE, as_tensors, encode, load_examples
from .features import CachedAnswerWindow, anchor_features
from .loop import train
from .targets import LabelledRows

RUN_FILE = "calm_train.json"
CARD_FILE = "README.md"
CHECKPOINTS = "checkpoints"
RUN_IDENTITY = "calm_run.json"  # in checkpoints/: the run the checkpoints belong to
NOT_COMPARED = ("eval_data", "eval_every", "checkpoint_every")  # may change between a run and its resumption


@dataclass(frozen=True)
class RunArgs:
    """The arguments of a training run (``calm_train.json``'s ``args``)."""

    anchor: str
    augmenting: str
    data: str
    format: str
    layers: int | list[list[int]] = 4
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-3
    max_length: int = 512
    bf16: bool = False
    eval_data: str | None = None
    eval_every: int = 0
    checkpoint_every: int = 50
    seed: int = 0
    bucket_by_length: bool = False
    recency_bias: bool = False
    normalize_inputs: bool = False
    cache_features: bool = False

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"Unknown data format {self.format!r}: choose one of {', '.join(FORMATS)}.")
        if (isinstance(self.layers, int) and self.layers < 1) or self.max_length < 2:
            raise ValueError(f"layers must be ≥ 1 and max_length ≥ 2; got {self.layers} and {self.max_length}.")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           warmup_steps=min(50, self.steps // 10), seed=self.seed,
                           log_every=max(1, min(20, self.steps // 5)), eval_every=self.eval_every,
                           checkpoint_every=self.checkpoint_every, precision="bf16" if self.bf16 else "fp32",
                           bucket_by_length=self.bucket_by_length)


@dataclass
class BaseModels:
    """The two frozen models and their tokenizers."""

    anchor: torch.nn.Module
    anchor_tokenizer: object
    augmenting: torch.nn.Module
    augmenting_tokenizer: object

    @property
    def shares_tokens(self) -> bool:
        """Whether both read the same token ids (the same vocabulary)."""
        return self.anchor_tokenizer.get_vocab() == self.augmenting_tokenizer.get_vocab()


def load_base_models(anchor: str, augmenting: str, bf16: bool = False, device: str | None = None) -> BaseModels:
    """Both models with :func:`calm_mini.models.load`, on ``device`` (default: a GPU if there is
    one); a tokenizer without a padding token pads with its end token."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    (m_b, tok_b), (m_a, tok_a) = load(anchor, dtype=dtype), load(augmenting, dtype=dtype)
    for tok in (tok_b, tok_a):
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    return BaseModels(m_b.to(device), tok_b, m_a.to(device), tok_a)


def compose_base_models(base: BaseModels, layers: int | list[list[int]] = 4, seed: int = 0,
                        **bridge_options) -> ComposedModel:
    """``compose`` with every ``layers``-th augmenting layer, or the (augmenting, anchor) layer
    pairs ``layers``; the cross-tokenizer path when the vocabularies differ. The bridges' initial
    weights come from ``seed``; ``bridge_options``: ``recency_bias``, ``normalize_inputs``."""
    options = {} if base.shares_tokens else dict(anchor_tokenizer=base.anchor_tokenizer,
                                                 augmenting_tokenizer=base.augmenting_tokenizer)
    layers = layers if isinstance(layers, int) else [tuple(pair) for pair in layers]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return compose(base.anchor, base.augmenting, layers=layers, check_vocab=not base.shares_tokens,
                       **bridge_options, **options)


def train_bridges(anchor: str, augmenting: str, data: str, format: str, output: str | os.PathLike, *,
                  layers: int | Sequence[Sequence[int]] = 4, steps: int = 500, batch_size: int = 8, lr: float = 1e-3, max_length: int = 512,
                  bf16: bool = False, eval_data: str | None = None, eval_every: int = 0, checkpoint_every: int = 50,
                  seed: int = 0, stop_at: int | None = None, push_to_hub: str | None = None, device: str | None = None,
                  progress: bool = True, bucket_by_length: bool = False, recency_bias: bool = False,
                  normalize_inputs: bool = False, cache_features: bool = False,
                  eval_score: Callable[[ComposedModel, object], dict[str, float]] | None = None) -> dict:
    """Train bridges between ``anchor`` and ``augmenting`` on ``data`` and save them to ``output``
    (see the module docstring). Calling it again with the same arguments resumes from the
    latest checkpoint in ``output/checkpoints`` (or, after a finished run, saves the same bridges).

    Args:
        anchor, augmenting: model folders, hub names (online) or ``"smollm2-135m-offline"``.
        data: a local JSON/JSONL/CSV/Parquet/text file or a hub dataset, in ``format``:
            ``"text"``, ``"completion"`` or ``"chat"`` (see :mod:`calm_mini.training.data`).
        layers: a bridge from every ``layers``-th augmenting layer (the paper's 4), or explicit
            (augmenting layer, anchor layer) pairs, 0-based (-1: the embeddings).
        max_length: rows are cut to this many tokens. Every batch is cut to its own longest row.
        bf16: base weights in bfloat16 and training under bf16 autocast (on a GPU).
        eval_data: validation data in the same format; its loss is computed every ``eval_every``
            steps and at the end.
        eval_score: also called then, with the model and the anchor's tokenizer: a task metric
            (the CLI's ``--eval-metric`` scores ``eval_data`` with ``evaluation.score_model``).
        stop_at: stop after this step, as if interrupted (the run resumes when called again).
        push_to_hub: a hub repository id to publish the folder to at the end (needs to be
            logged in, ``huggingface-cli login``).
        bucket_by_length: batches of rows of similar length (less padding; see
            :func:`calm_mini.training.batch_indices`). Off by default: it changes which rows share
            a batch, and cutting each batch to its longest row already costs nothing.
        recency_bias, normalize_inputs: the kit's bridge options (see :class:`calm_mini.core.Bridge`).
        cache_features: compute the frozen anchor's states below the lowest bridge once, so each
            step runs only the anchor layers from there up (same loss; much faster when the
            bridges sit high in the anchor; Llama-style anchors; the states of every row are kept
            in memory: rows × length × anchor width floats).
    Returns:
        the report: steps, final loss, validation loss, example counts, bridge parameters, the
        layer map, seconds; ``stopped_at`` when ``stop_at`` ended it early.
    Raises:
        FileNotFoundError: a data file or model folder that does not exist.
        ConnectionError: a hub name while offline.
        ValueError: an unknown format, a missing column, an empty dataset, no example within
            ``max_length``, a chat row without an assistant turn, or checkpoints of another run.
    """
    start = time.monotonic()
    layers = layers if isinstance(layers, int) else [[int(a), int(b)] for a, b in layers]  # as calm_train.json holds them
    args = RunArgs(anchor=_resolved(anchor), augmenting=_resolved(augmenting), data=_resolved(data), format=format,
                   layers=layers, steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, bf16=bf16,
                   eval_data=_resolved(eval_data) if eval_data else None, eval_every=eval_every,
                   checkpoint_every=checkpoint_every, seed=seed, bucket_by_length=bucket_by_length,
                   recency_bias=recency_bias, normalize_inputs=normalize_inputs, cache_features=cache_features)
    cfg, output = args.train_config(), Path(output)
    if not progress:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    processes = Accelerator()  # one process, or each of those `accelerate launch` started
    if batch_size % processes.num_processes:
        raise ValueError(f"batch_size={batch_size} must be divisible by the {processes.num_processes} processes.")
    with processes.main_process_first():  # the main process fills the datasets cache, the others read it
        dataset = load_examples(args.data)
        eval_set = load_examples(args.eval_data) if args.eval_data else None
        base = load_base_models(args.anchor, args.augmenting, bf16,
                                device or (str(processes.device) if processes.use_distributed else None))
        tokenizer = base.anchor_tokenizer
        encoded = encode(dataset, tokenizer, format, max_length)
        validation = (as_tensors(encode(eval_set, tokenizer, format, max_length), tokenizer.pad_token_id)
                      if eval_set else None)
    model = compose_base_models(base, args.layers, seed, recency_bias=recency_bias, normalize_inputs=normalize_inputs)
    tensors = as_tensors(encoded, tokenizer.pad_token_id, side="left" if cache_features else "right")
    checkpoints = output / CHECKPOINTS
    identity = {k: v for k, v in asdict(args).items() if k not in NOT_COMPARED}
    identity["data_fingerprint"] = _fingerprint(tensors)
    _check_same_run(checkpoints, identity)  # the last check: nothing is written before it
    if processes.is_main_process:
        atomic_write(checkpoints / RUN_IDENTITY, lambda path: Path(path).write_text(json.dumps(identity, indent=2)))
    rows = LabelledRows(model)
    loss = _validation_loss(rows, validation, batch_size, bf16) if validation is not None else None

    def validate() -> dict[str, float]:
        return {**(loss() if loss else {}), **(eval_score(model, tokenizer) if eval_score else {})}

    evaluate = validate if loss or eval_score else None
    trainer = rows
    if cache_features:  # the states entering the lowest bridged layer, once: a step runs the layers above
        trainer = CachedAnswerWindow(model)
        tensors["features"] = anchor_features(base.anchor, tensors, trainer.start, batch_size)
    # DDP under `accelerate launch`: each process trains on its share of every batch; the main one
    # evaluates and writes the checkpoints, every one resumes from them
    log = train(trainer, tensors, cfg, checkpoints, evaluate=evaluate, progress=progress, desc="bridges",
                accelerator=processes, stop_at=stop_at)
    pairs = [list(p) for p in model.calm_config.layer_maps[0].pairs]
    report = {
        "steps": log[-1]["step"] if log else 0, "final_loss": log[-1]["loss"] if log else None,
        "eval_loss": next((e["eval_loss"] for e in reversed(log) if "eval_loss" in e), None),
        "examples": len(encoded.rows), "truncated": encoded.truncated, "dropped": encoded.dropped,
        "bridge_parameters": model.num_bridge_parameters(), "layer_map": pairs, "variant": model.calm_config.variant,
        "seconds": round(time.monotonic() - start, 1),
    }
    if stop_at is not None and stop_at < steps:
        return {**report, "stopped_at": max(1, stop_at)}
    if processes.is_main_process:
        _save_run(output, model, args, report, log)
        if push_to_hub:
            report["hub"] = upload(output, push_to_hub)
    processes.wait_for_everyone()
    return report


def load_trained(folder: str | os.PathLike, anchor: str | None = None, augmenting: str | None = None,
                 device: str | None = None) -> tuple[ComposedModel, object, dict]:
    """The composition trained into ``folder`` by :func:`train_bridges`, on the base models its
    ``calm_train.json`` names (or ``anchor`` / ``augmenting`` instead).

    Returns:
        (model, the anchor's tokenizer, the run's arguments).
    Raises:
        FileNotFoundError: no such folder, no bridges in it, or no base models named.
        ValueError: the base models are not the ones the bridges were trained for.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"The bridges folder {folder} does not exist: pass the --output folder of "
                                "`python -m calm_mini train`.")
    config = read_config(folder)
    run = json.loads((folder / RUN_FILE).read_text()) if (folder / RUN_FILE).is_file() else {}
    args = run.get("args", {})
    anchor, augmenting = anchor or args.get("anchor"), augmenting or args.get("augmenting")
    if not anchor or not augmenting:
        raise FileNotFoundError(f"{folder} has no {RUN_FILE} naming the base models: pass --anchor and --augmenting "
                                "(the models the bridges were trained on).")
    base = load_base_models(anchor, augmenting, args.get("bf16", False), device)
    options = (dict(anchor_tokenizer=base.anchor_tokenizer, augmenting_tokenizer=base.augmenting_tokenizer)
               if config.variant == CROSS_TOKENIZER else {})
    try:
        model = ComposedModel.from_pretrained(folder, base.anchor, base.augmenting, **options)
    except ValueError as err:
        saved = f"{config.anchor.name_or_path or 'an unnamed anchor'} + {config.augmenting[0].name_or_path or 'an unnamed augmenting model'}"
        raise ValueError(f"{str(err).rstrip('.')}. The bridges in {folder} were trained for {saved}: pass those models with --anchor "
                         f"and --augmenting, or train bridges for these.") from err
    return model, base.anchor_tokenizer, args


def upload(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a trained bridges folder (without its checkpoints) to the hub repository
    ``repo_id``, creating it if needed; returns the commit's URL. Needs internet and a login
    (``huggingface-cli login`` or ``token``)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, ignore_patterns=[f"{CHECKPOINTS}/*", ".*"],
                               commit_message="CALM bridges trained with calm_mini")
    return getattr(commit, "commit_url", str(commit))


# ---------------------------------------------------------------------- helpers
def _resolved(name_or_path: str) -> str:
    """Local paths made absolute (so a folder reloads from anywhere); hub names as they are."""
    path = Path(str(name_or_path)).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def _fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode() + str(tuple(tensors[key].shape)).encode() + tensors[key].numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_same_run(checkpoints: Path, identity: dict) -> None:
    if not (checkpoints / RUN_IDENTITY).is_file():
        return
    saved = json.loads((checkpoints / RUN_IDENTITY).read_text())
    if saved != identity:
        diffs = {k: (saved.get(k), identity.get(k)) for k in sorted(set(saved) | set(identity))
                 if saved.get(k) != identity.get(k)}
        raise ValueError(f"{checkpoints} holds the checkpoints of another run (saved, now: {diffs}): use another "
                         f"output folder, or delete {checkpoints} to start over.")


def _validation_loss(trainer: LabelledRows, data: dict[str, torch.Tensor], batch_size: int, bf16: bool):
    """A callback for :func:`train`: the mean next-token loss per labelled token on ``data``."""
    def evaluate() -> dict[str, float]:
        total, count, device = 0.0, 0, trainer.model.device
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for first in range(0, len(data["input_ids"]), batch_size):
                batch = {k: v[first:first + batch_size].to(device) for k, v in data.items()}
                tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
                total += trainer(**batch).loss.float().item() * tokens
                count += tokens
        tqdm.write(f"validation loss {total / max(count, 1):.4f}")
        return {"eval_loss": total / max(count, 1)}

    return evaluate


def _save_run(output: Path, model: ComposedModel, args: RunArgs, report: dict, log: list[dict]) -> None:
    """Write the bridges, the card and calm_train.json into a temporary folder in ``output``, then
    rename each into place (calm_train.json, which marks a finished run, removed first and put last)."""
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".save-", dir=output))
    try:
        model.save_pretrained(staging)
        (staging / CARD_FILE).write_text(model_card(asdict(args), report, model.calm_config))
        run = {"format": "calm_mini.train", "version": 1, "args": asdict(args), "report": report, "log": log}
        (staging / RUN_FILE).write_text(json.dumps(run, indent=2))
        (output / RUN_FILE).unlink(missing_ok=True)
        for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_FILE, RUN_FILE):
            os.replace(staging / name, output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
