"""SmolLM2-135M-Instruct composed with a character-level model across tokenizers: the keys and
their split (:mod:`.data`), m_A (:mod:`.augmenting`), the composite and its bridges
(:mod:`.bridges`), the scores (:mod:`.scores`) and the run (:mod:`.run`)."""

from .augmenting import augmenting_cache_key, load_or_train_augmenting
from .bridges import bridge_data, compose_keys, train_bridges
from .config import TEMPLATES, KeysCharsConfig, KeysConfig
from .data import KeysData, build_data, make_keys, task_rows
from .run import format_report, run
from .scores import next_token_accuracy, next_tokens, score

__all__ = [
    "TEMPLATES", "KeysCharsConfig", "KeysConfig", "KeysData", "augmenting_cache_key", "bridge_data", "build_data",
    "compose_keys", "format_report", "load_or_train_augmenting", "make_keys", "next_token_accuracy", "next_tokens",
    "run", "score", "task_rows", "train_bridges",
]
