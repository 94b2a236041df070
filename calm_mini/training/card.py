"""The model card of trained bridges: a Hugging Face-style ``README.md`` (YAML front matter, then
what was composed, the layer map, the data, the training settings and the numbers)."""

from __future__ import annotations

from pathlib import Path

from ..core.config import CALMConfig


def shown(name_or_path: str | None) -> str:
    """A model or data name as a card shows it: hub names as they are, local paths by their last
    part (a card is published; the path on this machine is not)."""
    if not name_or_path:
        return "-"
    path = Path(name_or_path)
    return f"{path.name} (a local path)" if path.is_absolute() or path.exists() else name_or_path


def _hub_name(name: str) -> bool:
    return not (Path(name).is_absolute() or Path(name).exists()) and name != "smollm2-135m-offline"


def model_card(args: dict, report: dict, config: CALMConfig) -> str:
    """The card's text, from the run's arguments (``calm_train.json``'s ``args``), its report and
    the bridges' config."""
    base = [m for m in (args["anchor"], args["augmenting"]) if _hub_name(m)]
    front = ["---", "library_name: calm_mini", "tags:", "- calm", "- model-composition", "- cross-attention"]
    if base:
        front += ["base_model:"] + [f"- {m}" for m in base]
    front.append("---")
    pairs = config.layer_maps[0].pairs
    anchor, augmenting = config.anchor, config.augmenting[0]
    rows = "\n".join(f"| {b} | {i} | {j} |" for b, (i, j) in enumerate(pairs))
    metrics = {"final training loss": report.get("final_loss"), "final validation loss": report.get("eval_loss")}
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if v is not None)
    tokens = ("the same tokenizer (both read the anchor's token ids)" if config.variant == "shared_tokens"
              else "different tokenizers (the augmenting model reads the anchor's text with its own)")
    body = f"""
# CALM bridges: {shown(args['augmenting'])} → {shown(args['anchor'])}

Trained cross-attention bridges that compose two **frozen** language models (CALM, Bansal et al.,
[arXiv 2401.02412](https://arxiv.org/abs/2401.02412)), trained with calm_mini's
`python -m calm_mini train`. Only the bridges are in this folder; the base models are loaded
from their own places.

| role | model | layers | width |
|---|---|---|---|
| anchor (m_B) | {shown(args['anchor'])} | {anchor.num_layers} | {anchor.hidden_size} |
| augmenting (m_A) | {shown(args['augmenting'])} | {augmenting.num_layers} | {augmenting.hidden_size} |

Tokenizers: {tokens}. Bridges: {len(pairs)}, {report['bridge_parameters']:,} trained parameters,
{config.num_heads} heads each.

## Layer map

| bridge | augmenting layer | anchor layer |
|---|---|---|
{rows}

## Training

- data: {shown(args['data'])}, format `{args['format']}`: {report['examples']} examples
  ({report['truncated']} cut at {args['max_length']} tokens, {report['dropped']} dropped with nothing to learn)
- validation data: {shown(args.get('eval_data'))}
- steps: {args['steps']}, batch size {args['batch_size']}, learning rate {args['lr']}, seed {args['seed']},
  {'bf16' if args['bf16'] else 'fp32'}

| metric | value |
|---|---|
{metric_rows}

## Use

```python
from calm_mini.training.run import load_trained
model, tokenizer, args = load_trained("path/to/this/folder")  # loads the base models named in calm_train.json
```

or `python -m calm_mini generate --bridges path/to/this/folder --prompt "…"`. The run's arguments
and its training log are in `calm_train.json`.
"""
    return "\n".join(front) + "\n" + body
