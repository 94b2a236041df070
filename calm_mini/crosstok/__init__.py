"""Compose models that tokenize differently: the augmenting model reads the anchor's text with
its own tokenizer (:class:`CrossTokenizerModel`, registered as the ``cross_tokenizer`` variant
of :func:`calm_mini.compose`), and a character tokenizer to try it with."""

from .chars import char_tokenizer
from .model import CrossTokenizerModel

__all__ = ["CrossTokenizerModel", "char_tokenizer"]
