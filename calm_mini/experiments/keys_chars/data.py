"""The data of the keys experiment: made-up keys with a digit each, the character model's
training rows (``bavo:`` → ``7``, every key) and the task rows of the composite
(``bavo: secret digit `` → ``7``), split into D_C keys and held-out keys.

Every row is ``{"prompt": ..., "answer": ...}``; the answer is one digit, which both tokenizers
(characters, and SmolLM2's byte-level BPE) write as one token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import Dataset

from .config import CONSONANTS, VOWELS, KeysConfig


def make_keys(cfg: KeysConfig) -> dict[str, int]:
    """``cfg.n_keys`` distinct keys → digit, seeded by ``cfg.seed``; no key occurs inside a template."""
    rng = random.Random(cfg.seed)
    keys: dict[str, int] = {}
    while len(keys) < cfg.n_keys:
        key = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(2))
        digit = rng.randrange(10)
        if not any(key in t.replace("{k}", "") for t in cfg.templates):
            keys.setdefault(key, digit)
    return keys


def task_rows(keys: dict[str, int], names: list[str], templates: tuple[str, ...]) -> list[dict]:
    """The composite's task: each key of ``names`` in each template, answered with its digit."""
    return [{"prompt": t.format(k=k), "answer": str(keys[k])} for k in names for t in templates]


@dataclass(frozen=True)
class KeysData:
    """The keys, their split and the rows built from them.

    keys: key → digit; dc_keys + heldout_keys: a seeded shuffle of the keys.
    facts: m_A's training set, ``key:`` → digit for every key (held-out ones included: m_A
        knows them all); own_format: the same rows for the held-out keys alone (m_A's own format).
    dc_rows: the bridges' training set, the D_C keys in every template (N_dc × templates).
    heldout_rows, seen_rows: the scored rows, the first ``eval_keys`` held-out (resp. D_C)
        keys in every template.
    """

    config: KeysConfig
    keys: dict[str, int]
    dc_keys: list[str]
    heldout_keys: list[str]
    facts: Dataset
    own_format: list[dict]
    dc_rows: list[dict]
    heldout_rows: list[dict]
    seen_rows: list[dict]


def build_data(cfg: KeysConfig) -> KeysData:
    """Draw the keys, split them and build every set of rows; deterministic in ``cfg.seed``."""
    keys = make_keys(cfg)
    names = list(keys)
    random.Random(cfg.seed).shuffle(names)
    dc_keys, heldout_keys = names[: cfg.n_dc_keys], names[cfg.n_dc_keys :]
    facts = Dataset.from_list([{"prompt": f"{k}:", "answer": str(v)} for k, v in keys.items()])
    return KeysData(
        config=cfg, keys=keys, dc_keys=dc_keys, heldout_keys=heldout_keys, facts=facts,
        own_format=[{"prompt": f"{k}:", "answer": str(keys[k])} for k in heldout_keys],
        dc_rows=task_rows(keys, dc_keys, cfg.templates),
        heldout_rows=task_rows(keys, heldout_keys[: cfg.eval_keys], cfg.templates),
        seen_rows=task_rows(keys, dc_keys[: cfg.eval_keys], cfg.templates),
    )
