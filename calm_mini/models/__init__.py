"""Base models: loading (a folder, a hub name, the offline SmolLM2 GGUF), tiny and random models
built from configs, the cache of models the kit trains, and a catalogue of real pairings."""

from .builders import TINY_ARCHITECTURES, llama_config, tiny, tiny_like, word_level_tokenizer
from .cache import cached_model, default_cache_dir, settings_key
from .loading import SMOLLM2_GGUF, load, smollm2_folder

__all__ = [
    "SMOLLM2_GGUF", "TINY_ARCHITECTURES", "cached_model", "default_cache_dir", "llama_config", "load",
    "settings_key", "smollm2_folder", "tiny", "tiny_like", "word_level_tokenizer",
]
