"""The cache of models the kit trains itself: each in a folder named by a hash of every
setting that shapes it, written atomically, and reused by later runs.

The folder is ``$CALM_MINI_CACHE`` (default ``~/.cache/calm_mini``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from ..core.files import atomic_folder


def default_cache_dir() -> Path:
    """``$CALM_MINI_CACHE`` if set, else ``~/.cache/calm_mini``."""
    return Path(os.environ.get("CALM_MINI_CACHE", Path.home() / ".cache" / "calm_mini"))


def settings_key(prefix: str, settings: dict) -> str:
    """A cache folder name: ``prefix`` plus a hash of the JSON ``settings``."""
    return f"{prefix}-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]}"


def cached_model(
    folder: Path, train_model: Callable[[], tuple[LlamaForCausalLM, dict]],
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[LlamaForCausalLM, dict, bool]:
    """The model saved in ``folder``, or ``train_model()``'s, saved there atomically (weights,
    ``tokenizer`` if given, and its info dict as ``calm_mini.json``, plus ``train_seconds``).

    Returns:
        (model in eval mode, info, whether it came from the cache).
    """
    info_file = folder / "calm_mini.json"
    if info_file.exists():
        return LlamaForCausalLM.from_pretrained(folder).eval(), json.loads(info_file.read_text()), True
    start = time.perf_counter()
    model, info = train_model()
    info = {**info, "train_seconds": round(time.perf_counter() - start, 1)}
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "calm_mini.json").write_text(json.dumps(info, indent=2))
    return model.eval(), info, False
