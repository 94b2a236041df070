"""Synthetic tasks for calm_mini, as ``datasets.Dataset``s."""

from calm_mini.data.kv import (
    KV_MATH,
    KV_SUBS,
    NUM_MATH,
    KVConfig,
    KVData,
    build_kv_splits,
    build_tokenizer,
    evaluate_expression,
    kv_math,
    kv_subs,
    make_keys,
    num_math,
)

__all__ = [
    "KV_MATH",
    "KV_SUBS",
    "NUM_MATH",
    "KVConfig",
    "KVData",
    "build_kv_splits",
    "build_tokenizer",
    "evaluate_expression",
    "kv_math",
    "kv_subs",
    "make_keys",
    "num_math",
]
