"""The tokenizers of a cross-tokenizer composition: what identifies one in a save, and the
checks that it fits its model and gives back the text it reads."""

from __future__ import annotations

import hashlib
import json
import unicodedata

from transformers import PreTrainedTokenizerBase

PROBE = "Hello, World! Ça va? Naïve café, 42."


def identity(tokenizer: PreTrainedTokenizerBase) -> dict:
    """What identifies a tokenizer in a save: class, name, size and a hash of its vocabulary."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": tokenizer.name_or_path,
        "size": len(tokenizer),
        "fingerprint": hashlib.sha256(vocab.encode()).hexdigest()[:16],
    }


def check_tokenizer(tokenizer, role: str, vocab_size: int, check_text: bool) -> None:
    """A clear error if ``tokenizer`` is missing, not a tokenizer, too large for its model, or
    (with ``check_text``) does not give back the text it reads."""
    if tokenizer is None:
        raise ValueError(
            f"The {role} tokenizer is missing: composing models that tokenize differently needs both, "
            "compose(anchor, augmenting, anchor_tokenizer=…, augmenting_tokenizer=…), and so does loading their "
            "bridges: CrossTokenizerModel.from_pretrained(folder, anchor, augmenting, anchor_tokenizer=…, "
            "augmenting_tokenizer=…)."
        )
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"The {role} tokenizer must be a Hugging Face tokenizer (AutoTokenizer.from_pretrained); "
                        f"got {type(tokenizer).__name__}.")
    if len(tokenizer) > vocab_size:
        raise ValueError(f"The {role} tokenizer has {len(tokenizer)} tokens but the {role} model's vocabulary has "
                         f"{vocab_size}: they do not belong together.")
    if not check_text:
        return
    back = tokenizer.decode(tokenizer(PROBE, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
    if back != PROBE:
        raise ValueError(
            f"The {role} tokenizer does not give back the text it reads: {PROBE!r} -> {back!r} ({_how_text_changed(back)}). "
            "Across tokenizers the augmenting model reads the text the anchor's tokens decode to. Use a tokenizer "
            "that keeps text as it is (for decoding, clean_up_tokenization_spaces=False), or pass check_text=False "
            "to accept it: the augmenting model then reads its tokenizer's normalisation of the anchor's text."
        )


def _how_text_changed(back: str) -> str:
    def plain(text: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))

    if back == PROBE.lower():
        return "it lower-cases"
    if back == plain(PROBE):
        return "it strips accents"
    if back == plain(PROBE).lower():
        return "it lower-cases and strips accents"
    if back.replace(" ", "") == PROBE.replace(" ", ""):
        return "it changes spaces"
    return "it rewrites or drops characters, e.g. unknown ones"
