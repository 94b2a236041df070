"""Evaluation: greedy generation in batches (:mod:`.generation`), scores of strings (:mod:`.metrics`:
exact match, chrF, chrF++ through sacrebleu), pass@1 by running each generated program in a
separate process (:mod:`.execution`; it executes model output), any model in memory scored on your
data (:func:`.generation.score_model`), and a trained bridges folder scored or asked for a
continuation (:mod:`.run`)."""

from .execution import Execution, execute, pass_at_1, run_program
from .generation import (chat_prompt, cut_at_turn_end, exact_match, generate_answers, greedy_tokens, score_model,
                         validation_metric)
from .metrics import STRING_METRICS, chrf, chrf_plus_plus, exact_match_score
from .run import METRICS, evaluate_bridges, generate_text

__all__ = [
    "METRICS", "STRING_METRICS", "Execution", "chat_prompt", "chrf", "chrf_plus_plus", "cut_at_turn_end",
    "evaluate_bridges", "exact_match", "exact_match_score", "execute", "generate_answers", "generate_text",
    "greedy_tokens", "pass_at_1", "run_program", "score_model", "validation_metric",
]
