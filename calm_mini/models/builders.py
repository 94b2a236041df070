"""Models built from configs, with random weights: tiny models of real architectures for tests
and for learning the mechanics offline, the Llama configs the kit trains from scratch, and the
word-level tokenizers of its synthetic tasks."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, processors
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

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




def llama_config(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                 num_kv_heads: int | None = None, max_positions: int = 128, tokenizer=None, **extra) -> LlamaConfig:
    """A Llama config with tied embeddings; the special token ids come from ``tokenizer`` if given."""
    special = {}
    if tokenizer is not None:
        special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, **{**special, **extra},
    )


def word_level_tokenizer(tokens: list[str], pre_tokenizer, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A fast tokenizer whose vocabulary is ``[PAD] [BOS] [EOS] [UNK]`` (ids 0–3) then ``tokens``;
    ``pre_tokenizer`` cuts text into those tokens, decoding fuses them back with nothing between
    them, and with ``add_bos`` every text starts with ``[BOS]``. Saves and reloads with
    ``save_pretrained`` / ``AutoTokenizer.from_pretrained``."""
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *tokens])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Fuse()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK)
