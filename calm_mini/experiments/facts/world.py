"""A generated fictional world: people no pretrained model can know, and facts about them.

The offline composition demo (:mod:`calm_mini.facts`) composes a real chat model, the anchor
SmolLM2-135M-Instruct, with a small augmenting model that the kit trains on these facts:

* **entities** — invented people (``Orlen Vask``), each with one value per **attribute**
  (where they were born, their trade, their pet's name, their favourite dish). Values are
  invented words drawn from one pool per attribute, and every value is several BPE tokens long;
* **the augmenting corpus** — fact statements in several templates, a few facts per sequence in
  random order and one per line, about ALL entities (the augmenting model m_A must know them all,
  as the paper's m_A knows every key). Only the value tokens are trained on;
* **chat Q&A** — the user asks about one fact in the anchor's chat format (its chat template),
  the assistant restates it in the corpus's first template ("Orlen Vask was born in Tavrik."),
  so that at each answer token m_A's own next-token prediction is the right value. The entities
  are split three ways: *train* (the bridges' composition set D_C), *validation* (part of the
  training entities, kept apart to choose settings) and *held-out* (the test: never seen by the
  bridges).

Everything is seeded by :class:`WorldConfig` and rebuilt identically from it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

SPLITS = ("train", "validation", "heldout")


@dataclass(frozen=True)
class Attribute:
    """One kind of fact. ``templates[0]`` is the canonical statement the assistant answers with;
    every template has ``{name}`` and ends with `` {value}``."""

    name: str
    question: str
    templates: tuple[str, ...]


ATTRIBUTES = (
    Attribute("birthplace", "Where was {name} born?",
              ("{name} was born in {value}", "The birthplace of {name} is {value}", "{name} grew up in {value}")),
    Attribute("trade", "What does {name} do for a living?",
              ("{name} works as a {value}", "By trade, {name} is a {value}", "{name} earns a living as a {value}")),
    Attribute("pet", "What is the name of {name}'s pet?",
              ("{name}'s pet is called {value}", "The pet of {name} is called {value}", "{name} owns a pet called {value}")),
    Attribute("dish", "What is {name}'s favourite dish?",
              ("{name}'s favourite dish is {value}", "The favourite dish of {name} is {value}", "{name} loves to eat {value}")),
)

# Syllables of invented words; capitalised values are names (places, pets), the rest are nouns.
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "st", "tr")
NUCLEI = ("a", "e", "i", "o", "u")
CODAS = ("", "", "", "l", "n", "r", "s", "k")
CAPITALISED = {"birthplace", "pet"}

# Ordinary chat prompts: the composite must answer these as the anchor does. The first ones
# are mixed into the bridges' training data (with the anchor's own answers as targets), the
# last ``N_SHOWN_PROMPTS`` are only ever used to compare generations.
ORDINARY_PROMPTS = (
    "What is the capital of France?", "Name three colours.", "How many days are in a week?",
    "Give me a tip for sleeping better.", "What is 7 plus 5?", "Write a short greeting for a friend.",
    "What is the boiling point of water?", "Name a fruit that is yellow.", "What do bees make?",
    "Translate 'thank you' into French.", "Why is the sky blue?", "What is photosynthesis?",
    "Suggest a name for a cat.", "How do I make a cup of tea?", "What is the largest planet?",
    "List two uses of a computer.", "What does a doctor do?", "Tell me a fun fact about dogs.",
    "What season comes after winter?", "How many legs does a spider have?",
    "What is the opposite of hot?", "Give me a synonym for happy.", "What is the capital of Italy?",
    "What is the chemical symbol for gold?",
    # shown only (never trained on):
    "What is the capital of Germany?", "Name three animals that live in the sea.",
    "How can I stay focused while studying?", "What is the freezing point of water?",
    "Write one sentence about the moon.", "What are the primary colours?",
)
N_SHOWN_PROMPTS = 6

# More ordinary prompts for the bridges' training data, drawn from these patterns (never equal
# to a shown prompt): the bridges must learn to leave ordinary chat alone, and 18 prompts are
# too few to teach it.
ORDINARY_PATTERNS = (
    ("What is the capital of {}?", ("Spain", "Japan", "Canada", "Egypt", "Norway", "Brazil", "Kenya", "Peru")),
    ("Name three {}.", ("fruits", "musical instruments", "sports", "vegetables", "birds", "tools", "flowers",
                        "board games")),
    ("Give me a tip for {}.", ("cooking rice", "saving money", "learning a language", "running faster",
                               "writing an essay", "keeping plants alive", "making friends", "reading more")),
    ("What does a {} do?", ("teacher", "baker", "pilot", "farmer", "nurse", "plumber", "librarian", "chef")),
    ("Tell me a fun fact about {}.", ("cats", "the ocean", "elephants", "the sun", "trees", "honey", "owls",
                                      "volcanoes")),
    ("Write a short poem about {}.", ("autumn", "the sea", "a city at night", "friendship", "rain", "mountains",
                                      "a train journey", "snow")),
    ("What is the opposite of {}?", ("big", "fast", "light", "early", "open", "happy", "loud", "young")),
    ("Explain {} in one sentence.", ("gravity", "democracy", "a rainbow", "the internet", "evaporation",
                                     "inflation", "a vaccine", "an eclipse")),
    ("What is {} times {}?", ((3, 4), (6, 7), (8, 9), (12, 5), (11, 11), (7, 8), (9, 6), (4, 15))),
    ("Translate '{}' into {}.", (("good morning", "Spanish"), ("cat", "German"), ("water", "Italian"),
                                 ("friend", "French"), ("book", "Spanish"), ("house", "German"),
                                 ("please", "Italian"), ("night", "French"))),
)


@dataclass(frozen=True)
class WorldConfig:
    """How big the fictional world is and how it is split.

    ``n_validation`` and ``n_heldout`` entities are carved out of ``n_entities``; the rest are
    the bridges' training entities. ``pool_size`` values per attribute are shared among entities.
    The augmenting corpus has ``n_sequences`` sequences of ``facts_per_sequence`` facts.
    """

    n_entities: int = 240
    n_validation: int = 20
    n_heldout: int = 40
    pool_size: int = 24
    n_sequences: int = 12000
    facts_per_sequence: tuple[int, int] = (1, 3)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_validation < 1 or self.n_heldout < 1 or self.n_entities - self.n_validation - self.n_heldout < 1:
            raise ValueError(
                f"n_entities={self.n_entities} must leave at least one training entity after n_validation="
                f"{self.n_validation} and n_heldout={self.n_heldout} (each ≥ 1); raise n_entities or lower the splits."
            )
        lo, hi = self.facts_per_sequence
        if not 1 <= lo <= hi:
            raise ValueError(f"facts_per_sequence={self.facts_per_sequence}: need 1 <= min <= max, e.g. (2, 5).")
        if self.pool_size < 2 or self.n_sequences < 1:
            raise ValueError(f"pool_size={self.pool_size} (≥ 2) and n_sequences={self.n_sequences} (≥ 1) are too small.")

    @classmethod
    def classroom(cls, **overrides) -> WorldConfig:
        """240 people × 4 facts: 180 train the bridges, 20 validate, 40 are held out."""
        return replace(cls(), **overrides)

    @classmethod
    def full(cls, **overrides) -> WorldConfig:
        """1000 people (GPU-sized): 500 train the bridges, 100 validate, 400 are held out."""
        return replace(cls(n_entities=1000, n_validation=100, n_heldout=400, pool_size=80, n_sequences=60_000),
                       **overrides)

    def to_dict(self) -> dict:
        """JSON-ready settings (used to key the model cache)."""
        return asdict(self)


@dataclass(frozen=True)
class Entity:
    """An invented person, the split it belongs to, and its facts ``{attribute: value}``."""

    name: str
    split: str
    facts: dict[str, str]


@dataclass(frozen=True)
class World:
    """The entities of a :class:`WorldConfig`; ``entities`` is ordered train, validation, held-out."""

    config: WorldConfig
    entities: tuple[Entity, ...]

    def split(self, name: str) -> list[Entity]:
        """The entities of split ``name`` (one of ``SPLITS``)."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; choose one of {SPLITS}.")
        return [e for e in self.entities if e.split == name]


# ---------------------------------------------------------------- the world


def invented_word(rng: random.Random, syllables: int) -> str:
    """A pronounceable non-word of ``syllables`` syllables, e.g. ``tavrik``."""
    return "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(syllables))


def _words(rng: random.Random, n: int, syllables: tuple[int, int], taken: set[str], capitalise: bool,
           tokenizer: PreTrainedTokenizerBase | None) -> list[str]:
    """``n`` distinct new words, none in ``taken``; with a tokenizer, only words of ≥ 2 tokens."""
    words: list[str] = []
    while len(words) < n:
        word = invented_word(rng, rng.randint(*syllables))
        word = word.capitalize() if capitalise else word
        if word.lower() in taken:
            continue
        if tokenizer is not None and len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) < 2:
            continue
        taken.add(word.lower())
        words.append(word)
    return words


def make_world(cfg: WorldConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> World:
    """Draw the entities and their facts, seeded by ``cfg.seed``.

    With ``tokenizer`` every value is at least two tokens long (so a value is recalled token by
    token, not as one guess). Entity names are distinct, and no name part or value is used twice.
    """
    rng = random.Random(f"facts-{cfg.seed}")
    taken: set[str] = set()
    pools = {a.name: _words(rng, cfg.pool_size, (2, 2), taken, a.name in CAPITALISED, tokenizer) for a in ATTRIBUTES}
    firsts = _words(rng, cfg.n_entities, (2, 2), taken, True, None)
    lasts = _words(rng, cfg.n_entities, (1, 2), taken, True, None)
    n_train = cfg.n_entities - cfg.n_validation - cfg.n_heldout
    splits = ["train"] * n_train + ["validation"] * cfg.n_validation + ["heldout"] * cfg.n_heldout
    entities = tuple(
        Entity(f"{first} {last}", split, {a.name: rng.choice(pools[a.name]) for a in ATTRIBUTES})
        for first, last, split in zip(firsts, lasts, splits)
    )
    return World(cfg, entities)


def statement(attribute: Attribute, entity: Entity, template: int = 0) -> tuple[str, str]:
    """(prefix, target) of one fact: ``("Orlen Vask was born in", " Tavrik.")``."""
    prefix, _ = attribute.templates[template].split(" {value}")
    return prefix.format(name=entity.name), f" {entity.facts[attribute.name]}."


# ---------------------------------------------------------------- the augmenting corpus


def augmenting_corpus(world: World) -> Dataset:
    """Training text of the augmenting model: ``n_sequences`` rows, each a few random facts about
    random entities (all splits), one per line, templates drawn at random.

    Columns: ``text``; ``targets``, the character spans ``[start, end)`` of each fact's target
    (`` Tavrik.``, from its leading space) — the only tokens the augmenting model is trained on.
    Every fact of every entity occurs in every template at least once.
    """
    cfg = world.config
    rng = random.Random(f"corpus-{cfg.seed}")
    facts = [(a, e, t) for e in world.entities for a in ATTRIBUTES for t in range(len(a.templates))]
    order = facts * (1 + cfg.n_sequences * cfg.facts_per_sequence[1] // len(facts))
    rng.shuffle(order)
    rows, cursor = [], 0
    for _ in range(cfg.n_sequences):
        if cursor + cfg.facts_per_sequence[1] > len(order):
            rng.shuffle(order)
            cursor = 0
        k = rng.randint(*cfg.facts_per_sequence)
        text, targets = "", []
        for attribute, entity, template in order[cursor : cursor + k]:
            prefix, target = statement(attribute, entity, template)
            text += ("\n" if text else "") + prefix
            targets.append([len(text), len(text) + len(target)])
            text += target
        cursor += k
        rows.append({"text": text, "targets": targets})
    _cover(rows, facts)
    return Dataset.from_list(rows)


def _cover(rows: list[dict], facts: list) -> None:
    """Append any (attribute, entity, template) fact that no row holds yet, one per row."""
    seen = {row["text"] for row in rows}
    joined = "\n".join(seen)
    for attribute, entity, template in facts:
        prefix, target = statement(attribute, entity, template)
        if prefix + target not in joined:
            rows.append({"text": prefix + target, "targets": [[len(prefix), len(prefix) + len(target)]]})


def statements(world: World, template: int = 0) -> Dataset:
    """One completion per fact of ALL entities in corpus form: prompt ``Orlen Vask was born in``,
    answer `` Tavrik.`` — checks that the augmenting model learnt every fact."""
    rows = []
    for e in world.entities:
        for a in ATTRIBUTES:
            prefix, target = statement(a, e, template)
            rows.append({"prompt": prefix, "answer": target, "entity": e.name, "attribute": a.name,
                         "value": e.facts[a.name], "split": e.split})
    return Dataset.from_list(rows)


# ---------------------------------------------------------------- chat Q&A


def chat_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """``question`` as a user turn in the tokenizer's chat template, ready for the assistant."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("The tokenizer has no chat template; load the anchor's tokenizer (e.g. SmolLM2-Instruct).")
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=False)


def chat_splits(world: World, tokenizer: PreTrainedTokenizerBase) -> DatasetDict:
    """Chat questions about each split's entities: ``train``, ``validation``, ``heldout``.

    Columns: ``prompt`` (chat-formatted question), ``answer`` (the canonical statement, e.g.
    ``Orlen Vask was born in Tavrik.``), ``prefix`` (the answer up to the value), ``question``,
    ``entity``, ``attribute``, ``value``.
    """
    out = {}
    for split in SPLITS:
        rows = []
        for e in world.split(split):
            for a in ATTRIBUTES:
                prefix, target = statement(a, e)
                question = a.question.format(name=e.name)
                rows.append({"prompt": chat_prompt(tokenizer, question), "answer": prefix + target,
                             "prefix": prefix, "question": question, "entity": e.name, "attribute": a.name,
                             "value": e.facts[a.name]})
        out[split] = Dataset.from_list(rows)
    return DatasetDict(out)


def ordinary_questions(n_generated: int = 0, seed: int = 0) -> dict[str, list[str]]:
    """Ordinary chat questions: ``train`` = the fixed ones followed by ``n_generated`` distinct
    ones drawn from :data:`ORDINARY_PATTERNS` (seeded), ``shown`` = the last
    ``N_SHOWN_PROMPTS`` fixed ones, which no training question equals."""
    shown = list(ORDINARY_PROMPTS[-N_SHOWN_PROMPTS:])
    pool = sorted({pattern.format(*(f if isinstance(f, tuple) else (f,))) for pattern, fills in ORDINARY_PATTERNS
                   for f in fills} - set(ORDINARY_PROMPTS))
    if n_generated > len(pool):
        raise ValueError(f"n_generated={n_generated}: the patterns give only {len(pool)} distinct questions.")
    generated = random.Random(f"ordinary-{seed}").sample(pool, n_generated)
    return {"train": list(ORDINARY_PROMPTS[:-N_SHOWN_PROMPTS]) + generated, "shown": shown}


def ordinary_prompts(tokenizer: PreTrainedTokenizerBase, n_generated: int = 0, seed: int = 0) -> dict[str, list[str]]:
    """:func:`ordinary_questions`, chat-formatted: ``{"train": [...], "shown": [...]}``."""
    return {split: [chat_prompt(tokenizer, q) for q in questions]
            for split, questions in ordinary_questions(n_generated, seed).items()}
