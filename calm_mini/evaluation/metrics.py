"""Scores of generated text against references: exact match, and chrF / chrF++ (the metric of
the paper's FLORES translations) computed by `sacrebleu <https://github.com/mjpost/sacrebleu>`_,
so a number here is sacrebleu's own, comparable with published ones.

Exact match is a fraction in [0, 1]; chrF and chrF++ are corpus scores in [0, 100], as
sacrebleu reports them.
"""

from __future__ import annotations

from typing import Sequence

from sacrebleu.metrics import CHRF


def exact_match_score(predictions: Sequence[str], references: Sequence[str], strip: bool = True) -> float:
    """Fraction of predictions equal to their reference (compared after ``str.strip`` with ``strip``)."""
    _check(predictions, references)
    clean = (lambda s: s.strip()) if strip else (lambda s: s)
    return sum(clean(p) == clean(r) for p, r in zip(predictions, references)) / len(references)


def chrf(predictions: Sequence[str], references: Sequence[str], word_order: int = 0) -> float:
    """Corpus chrF (character n-grams up to 6, β = 2) of ``predictions`` against one reference
    each; ``word_order=2`` adds word uni- and bigrams: chrF++."""
    _check(predictions, references)
    return CHRF(word_order=word_order).corpus_score(list(predictions), [list(references)]).score


def chrf_plus_plus(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF++: chrF with word uni- and bigrams (``word_order=2``)."""
    return chrf(predictions, references, word_order=2)


# The metrics that compare strings, by the name the command line uses (pass@1 runs programs:
# see calm_mini.evaluation.execution).
STRING_METRICS = {"exact": exact_match_score, "chrf": chrf, "chrf++": chrf_plus_plus}


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references: give one each.")
    if not references:
        raise ValueError("No references to score: the dataset is empty.")
