"""A character-level tokenizer: one token per character, built offline with ``tokenizers``.

It is the simplest tokenizer that differs from any subword tokenizer, so it is what the kit
uses to compose models that tokenize differently (:mod:`calm_mini.crosstok`): a small model
that reads characters sees inside words that a subword anchor reads as one or two tokens.

``char_tokenizer()`` covers printable ASCII, newline, tab and the Latin-1 letters (é, ç, ß …),
so it gives back any such text unchanged; other characters become ``[UNK]``.
"""

from __future__ import annotations

from tokenizers import Regex, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..models.builders import word_level_tokenizer

ASCII = "".join(chr(c) for c in range(32, 127)) + "\n\t"
LATIN1_LETTERS = "".join(chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha())
DEFAULT_ALPHABET = ASCII + LATIN1_LETTERS


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A fast tokenizer with one token per character of ``alphabet``.

    Ids: ``[PAD]`` 0, ``[BOS]`` 1, ``[EOS]`` 2, ``[UNK]`` 3, then the alphabet in order.
    ``"ab"`` → ``[BOS] a b`` (without ``[BOS]`` if ``add_bos=False``); decoding joins the
    characters back with nothing between them.

    Raises:
        ValueError: the alphabet repeats a character or is empty.
    """
    if not alphabet or len(set(alphabet)) != len(alphabet):
        raise ValueError("The alphabet must be a non-empty string of distinct characters.")
    every_character = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return word_level_tokenizer(list(alphabet), every_character, add_bos)
