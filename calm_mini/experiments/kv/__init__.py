"""Key-value arithmetic, the paper's Table 1: data (:mod:`.data`), the two base models trained
from scratch (:mod:`.base_models`), the run (:mod:`.run`) and the ablations (:mod:`.ablations`)."""

from .ablations import (EncoderComposition, ablations, encode_with_prompts, lora_anchor, placement_study,
                        train_and_score)
from .base_models import BASE_TRAINING, BaseModelConfig, BaseModels, build_base_models, load_or_train, train_causal_lm
from .data import KVConfig, KVData, build_kv_splits, build_tokenizer, evaluate_expression
from .run import CLASSROOM_LAYERS, PAPER, TASKS, ExperimentConfig, compose_kv, evaluate, kv_math_accuracy, reproduce, train_bridges

__all__ = [
    "BASE_TRAINING", "CLASSROOM_LAYERS", "PAPER", "TASKS", "BaseModelConfig", "BaseModels", "EncoderComposition",
    "ExperimentConfig", "KVConfig", "KVData", "ablations", "build_base_models", "build_kv_splits", "build_tokenizer",
    "compose_kv", "encode_with_prompts", "evaluate", "evaluate_expression", "kv_math_accuracy", "load_or_train",
    "lora_anchor", "placement_study", "reproduce", "train_and_score", "train_bridges", "train_causal_lm",
]
