"""A catalogue of real open models that can be composed, and what training bridges on them costs.

CALM feeds the *same token ids* to the anchor and the augmenting model, so a pairing needs one
tokenizer on both sides. The models below come in families that share a tokenizer; each
:class:`Card` holds a model's shape (enough to rebuild its architecture offline, with random
weights, for benchmarks) and :data:`PAIRINGS` lists anchor ← augmenting pairs worth trying::

    python -m calm_mini.models.catalogue                  # the table, with estimated GPU memory
    python -m calm_mini.models.catalogue --batch 8 --length 1024

Shapes are those of the published ``config.json`` files; a test rebuilds every card on the meta
device and checks the parameter count against the published total, and compares the SmolLM2-135M
card with the offline GGUF's config. The memory figures are **estimates** (see
:func:`estimate_training_memory`), not measurements, until a benchmark on a GPU says otherwise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from ..core.layers import EveryK, ModelShape, bridge_parameter_count

GIB = 2**30


@dataclass(frozen=True)
class Card:
    """One published model: where to get it and its shape (the fields of its ``config.json``).

    ``params`` is the published total (embeddings counted once when tied); ``family`` names the
    tokenizer, so two cards of one family can be composed.
    """

    name: str
    hub: str
    family: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    rope_theta: float
    max_positions: int
    params: int

    def config(self) -> PretrainedConfig:
        """A ``transformers`` config of this architecture and size (no download)."""
        sizes = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_positions,
            tie_word_embeddings=self.tied_embeddings,
        )
        if self.model_type == "gpt_neox":  # Pythia: rotary on a quarter of each head, parallel residual
            extra = dict(rotary_pct=0.25, rotary_emb_base=self.rope_theta, use_parallel_residual=True)
        else:  # llama (SmolLM2), qwen2
            extra = dict(num_key_value_heads=self.num_kv_heads, rope_theta=self.rope_theta, rms_norm_eps=1e-5)
            if self.model_type == "qwen2":
                extra.update(rms_norm_eps=1e-6, use_sliding_window=False)
        return AutoConfig.for_model(self.model_type, **sizes, **extra)

    @property
    def shape(self) -> ModelShape:
        return ModelShape(
            self.num_layers, self.hidden_size, self.num_heads, self.vocab_size, self.max_positions, self.model_type
        )


def _smollm2(size: str, layers: int, width: int, heads: int, kv: int, inner: int, theta: float, params: int) -> Card:
    return Card(
        f"smollm2-{size.lower()}", f"HuggingFaceTB/SmolLM2-{size}-Instruct", "smollm2", "llama",
        layers, width, heads, kv, inner, 49152, True, theta, 8192, params,
    )  # fmt: skip


def _qwen(name: str, hub: str, layers: int, width: int, heads: int, kv: int, inner: int, vocab: int, tied: bool,
          params: int) -> Card:  # fmt: skip
    return Card(name, hub, "qwen2.5", "qwen2", layers, width, heads, kv, inner, vocab, tied, 1e6, 32768, params)


def _pythia(size: str, layers: int, width: int, heads: int, params: int) -> Card:
    return Card(
        f"pythia-{size}", f"EleutherAI/pythia-{size}", "pythia", "gpt_neox",
        layers, width, heads, heads, 4 * width, 50304, False, 10000.0, 2048, params,
    )  # fmt: skip


CARDS: dict[str, Card] = {
    c.name: c
    for c in (
        _smollm2("135M", 30, 576, 9, 3, 1536, 1e5, 134_515_008),
        _smollm2("360M", 32, 960, 15, 5, 2560, 1e5, 361_821_120),
        _smollm2("1.7B", 24, 2048, 32, 32, 8192, 1.3e5, 1_711_376_384),
        _qwen("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", 24, 896, 14, 2, 4864, 151936, True, 494_032_768),
        _qwen("qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B", 24, 896, 14, 2, 4864, 151936, True, 494_032_768),
        _qwen("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", 28, 1536, 12, 2, 8960, 151936, True, 1_543_714_304),
        _qwen("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B", 28, 1536, 12, 2, 8960, 151936, True, 1_543_714_304),
        _qwen("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct", 36, 2048, 16, 2, 11008, 151936, True, 3_085_938_688),
        _qwen("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 28, 3584, 28, 4, 18944, 152064, False, 7_615_616_512),
        _pythia("70m", 6, 512, 8, 70_426_624),
        _pythia("160m", 12, 768, 12, 162_322_944),
        _pythia("410m", 24, 1024, 16, 405_334_016),
        _pythia("1b", 16, 2048, 8, 1_011_781_632),
        _pythia("1.4b", 24, 2048, 16, 1_414_647_808),
        _pythia("2.8b", 32, 2560, 32, 2_775_208_960),
    )
}


@dataclass(frozen=True)
class Pairing:
    """An anchor ← augmenting pair from one tokenizer family, and what it is good for."""

    anchor: str
    augmenting: str
    use: str

    @property
    def same_vocab_size(self) -> bool:
        """False when the embedding matrices are padded differently: compose with ``check_vocab=False``."""
        return CARDS[self.anchor].vocab_size == CARDS[self.augmenting].vocab_size


PAIRINGS: tuple[Pairing, ...] = (
    Pairing("smollm2-135m", "smollm2-135m", "offline demo: the chat anchor + a 135M base taught new facts"),
    Pairing("smollm2-360m", "smollm2-135m", "smallest real size step; the benchmarks' second pair"),
    Pairing("smollm2-1.7b", "smollm2-360m", "a capable chat anchor + a specialised small model"),
    Pairing("qwen2.5-1.5b", "qwen2.5-coder-0.5b", "code (the paper's HumanEval/MBPP setting, small)"),
    Pairing("qwen2.5-3b", "qwen2.5-coder-1.5b", "code, a stronger anchor"),
    Pairing("qwen2.5-7b", "qwen2.5-coder-1.5b", "code, lab GPU; vocab padding differs: check_vocab=False"),
    Pairing("pythia-1.4b", "pythia-160m", "same data, different sizes: clean ablations"),
    Pairing("pythia-2.8b", "pythia-410m", "same data, larger"),
)


def card(name: str) -> Card:
    """The card called ``name`` (e.g. ``"smollm2-360m"``)."""
    try:
        return CARDS[name]
    except KeyError:
        raise KeyError(f"No model {name!r} in the catalogue; choose one of {sorted(CARDS)}.") from None


def smollm2_config(size: str) -> PretrainedConfig:
    """The ``LlamaConfig`` of SmolLM2 ``"135m"``, ``"360m"`` or ``"1.7b"``, with the real sizes."""
    return card(f"smollm2-{size.lower()}").config()


def count_parameters(config: PretrainedConfig) -> int:
    """Exact parameter count of a model built from ``config`` (on the meta device: no memory used)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def random_model(
    config: PretrainedConfig | str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> PreTrainedModel:
    """A model of a real architecture and size with random weights, built directly on ``device``.

    Speed and memory do not depend on weight values, so this stands in for a checkpoint in
    benchmarks on machines without internet. ``config`` may be a card name.
    """
    if isinstance(config, str):
        config = card(config).config()
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


# Activation bytes per token for bf16 autocast training of bridges (frozen bf16 weights), read off
# benchmarks/memory.py on CPU (torch 2.13, transformers 5.24, SDPA attention): see the docstring.
ANCHOR_LAYER_BYTES = (14, 6)  # per anchor layer: 14·D_B + 6·I_B
LOGIT_BYTES = 12  # per logit: bf16 logits, their fp32 copy for the loss, log-softmax, gradient
BRIDGE_BYTES = (2, 16)  # per bridge: 2·D_A + 16·D_B
BRIDGE_STATE_BYTES = 16  # per bridge parameter: fp32 weight, gradient, two AdamW moments


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to train bridges; ``total`` is the sum of the parts."""

    weights: int
    bridges: int
    activations: int
    logits: int
    num_bridges: int
    bridge_params: int

    @property
    def total(self) -> int:
        return self.weights + self.bridges + self.activations + self.logits

    @property
    def gib(self) -> float:
        return self.total / GIB


def estimate_training_memory(
    anchor: Card | str,
    augmenting: Card | str,
    batch: int = 8,
    length: int = 512,
    num_bridges: int | None = None,
    gradient_checkpointing: bool = False,
) -> MemoryEstimate:
    """Estimated peak memory of training bridges with bf16 base weights and fp32 bridges (autocast).

    With B = batch, T = length, P = parameters, L = layers, D = width, I = MLP width, V = vocabulary,
    n = bridges (default: the paper's every-4th augmenting layer, ``EveryK(4)``)::

        weights     = 2 · (P_B + P_A)                          bf16 base models
        bridges     = 16 · P_bridges                           fp32 weights + grads + AdamW m, v
        activations = B·T · (L_B · (14·D_B + 6·I_B)            saved by each anchor layer
                             + n · (2·D_A + 16·D_B))           saved by each bridge
        logits      = B·T · 12 · V                             bf16 logits, fp32 loss copies, gradient

    With gradient checkpointing each anchor layer keeps only its bf16 input (2·D_B) and one layer
    is recomputed at a time: L_B · 14·D_B + 6·I_B becomes L_B · 2·D_B + 14·D_B + 6·I_B.
    The per-token constants were read off measurements of live tensor bytes on CPU (see
    ``benchmarks/memory.py``); gradients flow through every anchor layer above the lowest bridge
    and we count all of them (an upper bound). Not included: the CUDA context and allocator
    slack (typically 0.5–1 GiB), and the augmenting model's transient no-grad activations.
    """
    anchor, augmenting = (card(c) if isinstance(c, str) else c for c in (anchor, augmenting))
    if batch < 1 or length < 1:
        raise ValueError(f"batch and length must be ≥ 1; got batch={batch}, length={length}.")
    if num_bridges is None:
        num_bridges = len(EveryK(4).resolve(augmenting.shape, anchor.shape))
    d_a, d_b, i_b = augmenting.hidden_size, anchor.hidden_size, anchor.intermediate_size
    per_layer = ANCHOR_LAYER_BYTES[0] * d_b + ANCHOR_LAYER_BYTES[1] * i_b
    anchor_layers = anchor.num_layers * 2 * d_b + per_layer if gradient_checkpointing else anchor.num_layers * per_layer
    per_token = anchor_layers + num_bridges * (BRIDGE_BYTES[0] * d_a + BRIDGE_BYTES[1] * d_b)
    bridge_params = bridge_parameter_count(d_a, d_b, num_bridges)
    return MemoryEstimate(
        weights=2 * (anchor.params + augmenting.params),
        bridges=BRIDGE_STATE_BYTES * bridge_params,
        activations=batch * length * per_token,
        logits=batch * length * LOGIT_BYTES * anchor.vocab_size,
        num_bridges=num_bridges,
        bridge_params=bridge_params,
    )


def table(batch: int = 8, length: int = 512) -> str:
    """The pairings as a Markdown table with estimated bf16 training memory (GiB)."""
    lines = [
        f"| anchor ← augmenting | tokenizer | layers | width | params | bridges (params) "
        f"| est. GiB, B={batch} T={length} | + grad. ckpt | use |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pair in PAIRINGS:
        a, m = CARDS[pair.anchor], CARDS[pair.augmenting]
        est = estimate_training_memory(a, m, batch, length)
        ckpt = estimate_training_memory(a, m, batch, length, gradient_checkpointing=True)
        lines.append(
            f"| {a.name} ← {m.name} | {a.family} | {a.num_layers} ← {m.num_layers} | {a.hidden_size} ← {m.hidden_size} "
            f"| {a.params / 1e6:,.0f}M ← {m.params / 1e6:,.0f}M | {est.num_bridges} ({est.bridge_params / 1e6:.1f}M) "
            f"| {est.gib:.1f} (estimated) | {ckpt.gib:.1f} (estimated) | {pair.use} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the catalogue of composable model pairs.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args(argv)
    print(table(args.batch, args.length))
    print(
        "\nGiB: estimated peak memory of training the bridges in bf16 (estimate_training_memory), "
        "not measured on a GPU; add 0.5-1 GiB for the CUDA context."
    )


if __name__ == "__main__":
    main()
