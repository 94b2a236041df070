"""Key-value arithmetic: the synthetic tasks of CALM's Table 1 (Bansal et al. 2024, §4.1).

Keys are short random lowercase strings, each a single token; each key has an integer value.

* KV-SUBS  — key → value.               Augmenting model m_A memorises it over ALL keys.
* NUM-MATH — arithmetic on numbers.     Anchor m_B learns it; it never sees a key.
* KV-MATH  — the same arithmetic, keys written where NUM-MATH writes numbers; the answer uses
             the keys' values. Neither model alone can do it; the composition can.

The keys are split into D_C keys (``dc_fraction``, 20 % by default) and held-out keys. The
bridges are trained on D_C (KV-MATH and KV-SUBS over D_C keys only, mixed with NUM-MATH) and
evaluated on KV-SUBS and KV-MATH over held-out keys: to succeed they must read the values out of
m_A rather than memorise. No held-out key appears anywhere in D_C.

Every example is a row with columns ``prompt``, ``answer``, ``text`` (= prompt + answer),
``task`` and ``keys`` (the keys the example uses; empty for NUM-MATH). ``text`` carries no
special tokens: the tokenizer prepends ``[BOS]``; training code appends ``[EOS]``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from typing import Literal

from datasets import Dataset, Features, List, Value
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ...models.builders import word_level_tokenizer

OPERATORS = "+-*"
DIGITS = "0123456789"
KV_SUBS, NUM_MATH, KV_MATH = "kv_subs", "num_math", "kv_math"

FEATURES = Features(
    {
        "prompt": Value("string"),
        "answer": Value("string"),
        "text": Value("string"),
        "task": Value("string"),
        "keys": List(Value("string")),
    }
)

KVFormat = Literal["direct", "equals"]


@dataclass(frozen=True)
class KVConfig:
    """Settings of the key-value arithmetic data.

    NUM-MATH draws its numbers from ``number_range``, which must contain ``value_range``: the
    anchor's arithmetic covers every value a key can stand for. Sizes count examples. NUM-MATH expressions for ``n_anchor_train`` and ``n_eval`` are
    distinct, as are the KV-MATH expressions of D_C and of its evaluation set. D_C holds
    ``n_dc_train`` rows: ``dc_num_math_fraction`` NUM-MATH, ``dc_kv_subs_fraction`` KV-SUBS over
    D_C keys (so the composition learns the format it is asked for KV-SUBS), the rest KV-MATH.

    ``kv_format`` is how KV-SUBS is written (key ``kaz`` with value 7):

    * ``"direct"`` (default): prompt ``kaz``, answer ``7`` → text ``kaz7``. The value follows the
      key token, so m_A's hidden state AT the key token must predict it. In KV-MATH
      (``kaz+bol=``) that is exactly the position whose m_A state the anchor's bridge can read,
      so the value is there to be found.
    * ``"equals"``: prompt ``kaz=``, answer ``7``. m_A predicts the value at ``=``; the key
      position need not hold it, and in KV-MATH the next token after a key is an operator, not
      ``=``. Kept as a setting to show the difference.
    """

    n_keys: int = 300
    key_length: int = 3
    value_range: tuple[int, int] = (0, 9)
    number_range: tuple[int, int] = (0, 19)
    operators: str = "+-"
    n_operands: tuple[int, int] = (2, 2)
    dc_fraction: float = 0.2
    n_anchor_train: int = 600
    n_dc_train: int = 2000
    dc_num_math_fraction: float = 0.4
    dc_kv_subs_fraction: float = 0.1
    n_eval: int = 200
    n_eval_kv_math: int = 200
    kv_format: KVFormat = "direct"
    seed: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def classroom(cls, **overrides) -> KVConfig:
        """Single-digit values, two operands, + and −: both base models train on 2 CPU cores in
        about a minute. The anchor's numbers run 0–19 (keys' values are 0–9, a part of them), so
        the NUM-MATH space holds 20²·2 = 800 expressions: 600 train the anchor and 200 others
        are held out, so one example is 0.5 points."""
        return replace(cls(), **overrides)

    @classmethod
    def paper_cpu(cls, **overrides) -> KVConfig:
        """Harder, still on a CPU: 1,000 keys, three operands, + − ×. The NUM-MATH space holds
        10³·3² = 9,000 expressions."""
        base = cls(
            n_keys=1000,
            operators="+-*",
            number_range=(0, 9),
            n_operands=(3, 3),
            n_anchor_train=8000,
            n_dc_train=4000,
        )
        return replace(base, **overrides)

    @classmethod
    def full(cls, **overrides) -> KVConfig:
        """Closer to the paper: 3–6 operands, + − ×, values 0–99, more keys (GPU-sized)."""
        base = cls(
            n_keys=2000,
            key_length=4,
            value_range=(0, 99),
            number_range=(0, 99),
            operators="+-*",
            n_operands=(3, 6),
            n_anchor_train=200_000,
            n_dc_train=50_000,
            n_eval=1000,
        )
        return replace(base, **overrides)

    @property
    def n_dc_keys(self) -> int:
        """Number of D_C keys: ``round(dc_fraction * n_keys)``."""
        return round(self.dc_fraction * self.n_keys)

    def to_dict(self) -> dict:
        """JSON-ready settings (used to key the model cache)."""
        return asdict(self)


def _validate(cfg: KVConfig) -> None:
    """Raise ``ValueError`` naming the bad setting and how to fix it."""
    lo, hi = cfg.value_range
    if not 0 <= lo <= hi:
        raise ValueError(f"value_range={cfg.value_range}: need 0 <= min <= max, e.g. (0, 9).")
    if not cfg.number_range[0] <= lo <= hi <= cfg.number_range[1]:
        raise ValueError(f"number_range={cfg.number_range} must contain value_range={cfg.value_range}: the "
                         f"anchor must know every number a key stands for.")
    kmin, kmax = cfg.n_operands
    if not 2 <= kmin <= kmax:
        raise ValueError(f"n_operands={cfg.n_operands}: need 2 <= min <= max, e.g. (2, 2).")
    ops = cfg.operators
    if not ops or set(ops) - set(OPERATORS) or len(set(ops)) != len(ops):
        raise ValueError(
            f"operators={cfg.operators!r}: give distinct characters from {OPERATORS!r}, e.g. '+-'."
        )
    if cfg.key_length < 1 or cfg.n_keys > 26**cfg.key_length // 2:
        raise ValueError(
            f"n_keys={cfg.n_keys} with key_length={cfg.key_length}: at most half of the "
            f"26**key_length strings may be keys; lengthen the keys or use fewer."
        )
    if cfg.kv_format not in ("direct", "equals"):
        raise ValueError(f"kv_format={cfg.kv_format!r}: use 'direct' or 'equals'.")
    if not 1 <= cfg.n_dc_keys <= cfg.n_keys - 1:
        raise ValueError(
            f"dc_fraction={cfg.dc_fraction} of n_keys={cfg.n_keys} gives {cfg.n_dc_keys} D_C keys: "
            f"need at least one D_C key and one held-out key; choose a fraction strictly "
            f"between {1 / cfg.n_keys:.3g} and {1 - 1 / cfg.n_keys:.3g}."
        )
    fractions = cfg.dc_num_math_fraction + cfg.dc_kv_subs_fraction
    if min(cfg.dc_num_math_fraction, cfg.dc_kv_subs_fraction) < 0.0 or fractions >= 1.0:
        raise ValueError(
            f"dc_num_math_fraction={cfg.dc_num_math_fraction}, dc_kv_subs_fraction="
            f"{cfg.dc_kv_subs_fraction}: need each >= 0 and their sum < 1 (D_C must contain "
            f"some KV-MATH)."
        )
    for name in ("n_anchor_train", "n_dc_train", "n_eval", "n_eval_kv_math"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)}: need at least 1 example.")
    _check_space(cfg, "NUM-MATH", cfg.number_range[1] - cfg.number_range[0] + 1, cfg.n_anchor_train + cfg.n_eval,
                 "n_anchor_train + n_eval")
    _check_space(cfg, "KV-MATH over D_C keys", cfg.n_dc_keys, dc_sizes(cfg)[KV_MATH] + cfg.n_eval_kv_math,
                 "KV-MATH examples of D_C + n_eval_kv_math")
    _check_space(cfg, "KV-MATH over held-out keys", cfg.n_keys - cfg.n_dc_keys, cfg.n_eval_kv_math,
                 "n_eval_kv_math")


def _check_space(cfg: KVConfig, what: str, n_atoms: int, needed: int, sizes: str) -> None:
    """Raise if fewer than ``needed`` distinct expressions exist over ``n_atoms`` operands."""
    available = n_expressions(n_atoms, len(cfg.operators), cfg.n_operands)
    if needed > available:
        raise ValueError(
            f"{what}: {sizes} = {needed} distinct expressions requested but only {available} "
            f"exist; shrink the sizes or widen number_range / n_keys / n_operands / operators."
        )


def dc_sizes(cfg: KVConfig) -> dict[str, int]:
    """How many rows of each task D_C holds: ``{task: count}``, summing to ``n_dc_train``."""
    num = round(cfg.dc_num_math_fraction * cfg.n_dc_train)
    subs = round(cfg.dc_kv_subs_fraction * cfg.n_dc_train)
    return {NUM_MATH: num, KV_SUBS: subs, KV_MATH: cfg.n_dc_train - num - subs}


def n_expressions(n_atoms: int, n_ops: int, n_operands: tuple[int, int]) -> int:
    """Number of distinct expressions with ``n_operands`` operands drawn from ``n_atoms``."""
    return sum(n_atoms**k * n_ops ** (k - 1) for k in range(n_operands[0], n_operands[1] + 1))


# ---------------------------------------------------------------- keys and tokenizer


def make_keys(cfg: KVConfig) -> dict[str, int]:
    """Draw ``cfg.n_keys`` distinct random lowercase keys and their values, seeded."""
    rng = random.Random(f"{cfg.seed}-keys")
    keys: dict[str, int] = {}
    while len(keys) < cfg.n_keys:
        key = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=cfg.key_length))
        if key not in keys:
            keys[key] = rng.randint(*cfg.value_range)
    return keys


def build_tokenizer(keys: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: specials, single digits, ``+ - * =``, and every key as one token.

    Text has no spaces: ``kaz+bol=12`` → ``[BOS] kaz + bol = 1 2``; decoding fuses the tokens
    back without separators. Saves and reloads with ``save_pretrained`` /
    ``AutoTokenizer.from_pretrained``.
    """
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation("isolated"), pre_tokenizers.Whitespace()]
    )
    return word_level_tokenizer([*DIGITS, *OPERATORS, "=", *sorted(keys)], pre_tokenizer)


# ---------------------------------------------------------------- tasks


def _row(prompt: str, answer: str, task: str, keys: list[str]) -> dict:
    return {"prompt": prompt, "answer": answer, "text": prompt + answer, "task": task, "keys": keys}


def _kv_subs_rows(keys: list[str], values: dict[str, int], kv_format: KVFormat) -> list[dict]:
    suffix = "=" if kv_format == "equals" else ""
    return [_row(k + suffix, str(values[k]), KV_SUBS, [k]) for k in keys]


def kv_subs(keys: dict[str, int], kv_format: KVFormat = "direct") -> Dataset:
    """KV-SUBS rows, one per key: ``kaz`` → ``7`` (or ``kaz=`` → ``7``, see ``KVConfig``)."""
    return Dataset.from_list(_kv_subs_rows(list(keys), keys, kv_format), features=FEATURES)


def _sample_expressions(
    atoms: list[str], cfg: KVConfig, n: int, rng: random.Random, exclude: set[str] = frozenset()
) -> list[str]:
    """``n`` distinct expressions like ``a+b*c`` over ``atoms``, none in ``exclude``."""
    seen, out = set(exclude), []
    while len(out) < n:
        k = rng.randint(*cfg.n_operands)
        parts = [rng.choice(atoms)]
        for _ in range(k - 1):
            parts += [rng.choice(cfg.operators), rng.choice(atoms)]
        expr = "".join(parts)
        if expr not in seen:
            seen.add(expr)
            out.append(expr)
    return out


def _split_expression(expr: str) -> list[str]:
    """``kaz+12*bol`` → ``['kaz', '+', '12', '*', 'bol']``."""
    parts, cur = [], ""
    for ch in expr:
        if ch in OPERATORS:
            parts += [cur, ch]
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def evaluate_expression(expr: str, values: dict[str, int] | None = None) -> int:
    """Value of ``expr`` with the usual precedence (× before + and −); keys read from
    ``values``."""
    values = values or {}
    parts = _split_expression(expr)
    nums = [values[p] if p in values else int(p) for p in parts[::2]]
    total, sign, term = 0, 1, nums[0]
    for op, n in zip(parts[1::2], nums[1:]):
        if op == "*":
            term *= n
        else:
            total, sign, term = total + sign * term, (1 if op == "+" else -1), n
    return total + sign * term


def _num_math_rows(expressions: list[str]) -> list[dict]:
    return [_row(e + "=", str(evaluate_expression(e)), NUM_MATH, []) for e in expressions]


def _kv_math_rows(expressions: list[str], keys: dict[str, int]) -> list[dict]:
    return [
        _row(e + "=", str(evaluate_expression(e, keys)), KV_MATH,
             [p for p in _split_expression(e) if p in keys])
        for e in expressions
    ]


def num_math(expressions: list[str]) -> Dataset:
    """NUM-MATH rows: ``3+5-2=`` → ``6``."""
    return Dataset.from_list(_num_math_rows(expressions), features=FEATURES)


def kv_math(expressions: list[str], keys: dict[str, int]) -> Dataset:
    """KV-MATH rows: ``kaz+bol=`` → value(kaz) + value(bol)."""
    return Dataset.from_list(_kv_math_rows(expressions, keys), features=FEATURES)


# ---------------------------------------------------------------- splits


@dataclass
class KVData:
    """Everything the Table 1 experiment needs.

    ``splits`` maps names to datasets:

    * ``augmenting_train`` — KV-SUBS over all keys (m_A memorises it);
    * ``anchor_train``     — NUM-MATH (m_B learns arithmetic);
    * ``dc_train``         — D_C: KV-MATH over D_C keys mixed with NUM-MATH from
      ``anchor_train`` and KV-SUBS over D_C keys (see ``dc_sizes``), shuffled;
    * ``eval_kv_subs``     — KV-SUBS over held-out keys;
    * ``eval_num_math``    — NUM-MATH expressions in no training set;
    * ``eval_kv_math_heldout`` — KV-MATH whose operands are all held-out keys;
    * ``eval_kv_math_dc``  — KV-MATH over D_C keys, expressions not in ``dc_train``.
    """

    config: KVConfig
    keys: dict[str, int]
    dc_keys: list[str]
    heldout_keys: list[str]
    tokenizer: PreTrainedTokenizerFast
    splits: dict[str, Dataset]


def build_kv_splits(cfg: KVConfig) -> KVData:
    """Draw keys, build the tokenizer and every split; deterministic in ``cfg.seed``."""
    keys = make_keys(cfg)
    shuffled = list(keys)
    random.Random(f"{cfg.seed}-dc").shuffle(shuffled)
    dc_keys, heldout_keys = shuffled[: cfg.n_dc_keys], shuffled[cfg.n_dc_keys :]

    numbers = [str(v) for v in range(cfg.number_range[0], cfg.number_range[1] + 1)]
    rng = random.Random(f"{cfg.seed}-num")
    num_exprs = _sample_expressions(numbers, cfg, cfg.n_anchor_train + cfg.n_eval, rng)
    anchor_exprs, eval_num_exprs = num_exprs[: cfg.n_anchor_train], num_exprs[cfg.n_anchor_train :]

    sizes = dc_sizes(cfg)
    rng = random.Random(f"{cfg.seed}-dc-data")
    dc_exprs = _sample_expressions(dc_keys, cfg, sizes[KV_MATH] + cfg.n_eval_kv_math, rng)
    dc_train_exprs, eval_dc_exprs = dc_exprs[cfg.n_eval_kv_math :], dc_exprs[: cfg.n_eval_kv_math]
    mix_exprs = rng.choices(anchor_exprs, k=sizes[NUM_MATH])  # NUM-MATH the anchor trained on
    subs_keys = rng.choices(dc_keys, k=sizes[KV_SUBS])
    dc_rows = (_kv_math_rows(dc_train_exprs, keys) + _num_math_rows(mix_exprs)
               + _kv_subs_rows(subs_keys, keys, cfg.kv_format))
    rng.shuffle(dc_rows)

    rng = random.Random(f"{cfg.seed}-heldout")
    heldout_exprs = _sample_expressions(heldout_keys, cfg, cfg.n_eval_kv_math, rng)
    splits = {
        "augmenting_train": kv_subs(keys, cfg.kv_format),
        "anchor_train": num_math(anchor_exprs),
        "dc_train": Dataset.from_list(dc_rows, features=FEATURES),
        "eval_kv_subs": kv_subs({k: keys[k] for k in heldout_keys}, cfg.kv_format),
        "eval_num_math": num_math(eval_num_exprs),
        "eval_kv_math_heldout": kv_math(heldout_exprs, keys),
        "eval_kv_math_dc": kv_math(eval_dc_exprs, keys),
    }
    return KVData(cfg, keys, dc_keys, heldout_keys, build_tokenizer(list(keys)), splits)
