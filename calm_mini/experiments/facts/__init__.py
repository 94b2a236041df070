"""SmolLM2-135M-Instruct learns fictional facts from a small augmenting model, offline: the world
(:mod:`.world`), m_A (:mod:`.augmenting`), the bridges' data and training (:mod:`.bridges`), the
scores (:mod:`.scores`) and the run (:mod:`.run`)."""

from .augmenting import augmenting_cache_key, encode_corpus, load_or_train_augmenting, new_augmenting
from .bridges import bridge_data, bridge_trainer, compose_facts, encode_chat
from .config import AugmentingConfig, FactsConfig
from .run import format_report, run
from .scores import answer_scores, chat_table, compare_ordinary, target_accuracy
from .world import World, WorldConfig, make_world

__all__ = [
    "AugmentingConfig", "FactsConfig", "World", "WorldConfig", "answer_scores", "augmenting_cache_key", "bridge_data",
    "bridge_trainer", "chat_table", "compare_ordinary", "compose_facts", "encode_chat", "encode_corpus",
    "format_report", "load_or_train_augmenting", "make_world", "new_augmenting", "run", "target_accuracy",
]
