"""Composing models that tokenize differently (calm_mini.crosstok): no leakage measured in text,
equivalence with the shared-token path, batch/padding invariance, cached == uncached (with BPE
merges that change the augmenting side's last tokens), save/load, and clear errors."""

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from calm_mini import ComposedModel, compose
from calm_mini.core import positions_from_mask
from calm_mini.crosstok import CrossTokenizerModel
from calm_mini.crosstok import char_tokenizer
from calm_mini.crosstok.model import _Alignment
from calm_mini.models import tiny
from conftest import randomise_bridges

CORPUS = ["the theory of the thesis is there", "then they think the other thing", "this is that, isn't it?"]
LAYERS = dict(layers=[(-1, -1), (1, 0), (1, 2)], recency_bias=True)
TEXTS = ["the theory then", "they think", "a"]


def bpe(vocab_size: int, corpus=CORPUS) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process: "the t" → the|Ġ|t but "the th" → the|Ġth."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>")


class SlowChars(PreTrainedTokenizer):
    """A slow (pure Python) character tokenizer, with the ids of ``char_tokenizer(ALPHABET)``."""

    ALPHABET = "abcdefghijklmnopqrstuvwxyz ,.!?'"

    def __init__(self, **kwargs):
        self.vocab = {t: i for i, t in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", *self.ALPHABET])}
        super().__init__(bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]", **kwargs)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab)

    def _tokenize(self, text):
        return list(text)

    def _convert_token_to_id(self, token):
        return self.vocab.get(token, self.vocab["[UNK]"])

    def _convert_id_to_token(self, index):
        return list(self.vocab)[index]

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, ids, pair=None):
        return [self.vocab["[BOS]"], *ids]


@pytest.fixture(scope="module")
def tokenizers():
    return {"chars": char_tokenizer(), "bpe": bpe(300), "bpe2": bpe(280, CORPUS[::-1] + ["three thin theses"])}


def models_for(anchor_tokenizer, augmenting_tokenizer, arch=("llama", "gpt2")):
    anchor = tiny(arch[0], hidden_size=64, num_layers=4, vocab_size=len(anchor_tokenizer), seed=1)
    augmenting = tiny(arch[1], hidden_size=32, num_layers=2, vocab_size=len(augmenting_tokenizer), seed=2)
    return anchor, augmenting


def cross(tokenizers, anchor_name="chars", augmenting_name="bpe", options=LAYERS, arch=("llama", "gpt2"), **kw):
    anchor_tok, augmenting_tok = tokenizers[anchor_name], tokenizers[augmenting_name]
    anchor, augmenting = models_for(anchor_tok, augmenting_tok, arch)
    model = compose(anchor, augmenting, anchor_tokenizer=anchor_tok, augmenting_tokenizer=augmenting_tok,
                    **options, **kw)
    return randomise_bridges(model), anchor_tok


def encode(tokenizer, texts, side="left"):
    tokenizer.padding_side = side
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def prefix_tokens(anchor_tok, augmenting_tok, ids):
    """P_t for every anchor prefix of ``ids`` (a list)."""
    texts = anchor_tok.batch_decode([ids[: t + 1] for t in range(len(ids))], skip_special_tokens=True)
    return augmenting_tok(texts)["input_ids"]


def retracts(tokens: list[list[int]]) -> bool:
    """Whether some P_t is not a prefix of P_{t+1}: the augmenting side's last tokens changed."""
    return any(b[: len(a)] != a for a, b in zip(tokens, tokens[1:]))


# ---------------------------------------------------------------- the rule
@torch.no_grad()
@pytest.mark.parametrize("pair", [("chars", "bpe"), ("bpe", "chars"), ("bpe", "bpe2")])
def test_no_leakage_measured_in_text(tokenizers, pair):
    """Changing the character at position c changes no output of an anchor token whose text
    ends at or before c — although the augmenting BPE re-segments text before c."""
    model, anchor_tok = cross(tokenizers, *pair)
    text = "the theory then they think"
    checked = 0
    for c in range(1, len(text)):
        changed = text[:c] + ("x" if text[c] != "x" else "y") + text[c + 1 :]
        ids, new_ids = (anchor_tok(t)["input_ids"] for t in (text, changed))
        ends = [len(s) for s in anchor_tok.batch_decode([ids[: t + 1] for t in range(len(ids))], skip_special_tokens=True)]
        before = model(torch.tensor([ids])).logits[0]
        after = model(torch.tensor([new_ids])).logits[0]
        # anchor tokens that end by c and are the same tokens in both texts
        n = next((t for t, e in enumerate(ends) if e > c or ids[: t + 1] != new_ids[: t + 1]), len(ids))
        assert torch.allclose(before[:n], after[:n], atol=1e-5, rtol=0), f"changing character {c} leaked"
        if n < min(len(ids), len(new_ids)):
            assert not torch.allclose(before[n], after[n]), "the change changed nothing at all"
        checked += n
    assert checked > 30


@torch.no_grad()
def test_bpe_merges_happen_in_the_texts_tested(tokenizers):
    """Guards the tests above and below: the augmenting side's last tokens do change."""
    ids = tokenizers["chars"]("the theory then they think")["input_ids"]
    assert retracts(prefix_tokens(tokenizers["chars"], tokenizers["bpe"], ids))


@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["chars", "kv-like bpe"])
def test_identical_tokenizers_reproduce_the_shared_token_path_exactly(tokenizers, side, name):
    tokenizer = tokenizers["chars"] if name == "chars" else bpe(300, ["ab", "cd"])  # merges only "ab", "cd"
    texts = ["abcd ab", "cdab", "a"] if name != "chars" else TEXTS
    anchor, augmenting = models_for(tokenizer, tokenizer)
    shared = randomise_bridges(compose(anchor, augmenting, **LAYERS))
    model = compose(anchor, augmenting, anchor_tokenizer=tokenizer, augmenting_tokenizer=tokenizer, **LAYERS)
    model.bridges.load_state_dict(shared.bridges.state_dict())
    ids, mask = encode(tokenizer, texts, side)
    assert torch.equal(model(ids, attention_mask=mask).logits, shared(ids, attention_mask=mask).logits)


@torch.no_grad()
def test_equals_the_anchor_at_initialisation(tokenizers):
    anchor_tok = tokenizers["chars"]
    anchor, augmenting = models_for(anchor_tok, tokenizers["bpe"])
    model = compose(anchor, augmenting, anchor_tokenizer=anchor_tok, augmenting_tokenizer=tokenizers["bpe"], **LAYERS)
    ids, mask = encode(anchor_tok, TEXTS)
    positions = positions_from_mask(mask, 0, ids.shape[1], ids.device)
    expected = anchor(ids, attention_mask=mask, position_ids=positions).logits
    assert torch.equal(model(ids, attention_mask=mask).logits, expected)


# ---------------------------------------------------------------- batches and caches
@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pair", [("chars", "bpe"), ("bpe", "bpe2")])
def test_padded_batch_matches_single_sequences(tokenizers, side, pair):
    model, anchor_tok = cross(tokenizers, *pair, arch=("qwen2", "llama"))
    ids, mask = encode(anchor_tok, TEXTS, side)
    batch = model(ids, attention_mask=mask).logits
    for i, text in enumerate(TEXTS):
        single = model(torch.tensor([anchor_tok(text)["input_ids"]])).logits[0]
        rows = batch[i][mask[i].bool()]
        assert torch.allclose(rows, single, atol=1e-5, rtol=0), f"row {i} ({side} padded) differs"


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1, 3])
def test_stepwise_forward_with_cache_matches_full_forward(tokenizers, chunk):
    """Fed a few tokens at a time, each anchor token reads what it reads in one pass — also
    where a merge retracts the augmenting side's last tokens (the changed suffix is recomputed)."""
    model, anchor_tok = cross(tokenizers, "chars", "bpe")
    ids = torch.tensor([anchor_tok("the theory then they think")["input_ids"]])
    full = model(ids).logits
    cache, steps = None, []
    for start in range(0, ids.shape[1], chunk):
        out = model(ids[:, start : start + chunk], cache=cache, use_cache=True)
        cache = out.cache
        steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("sample", [False, True])
def test_cached_generation_equals_uncached_batched_left_padded(tokenizers, sample):
    """The anchor writes characters, and may choose at each step between the next character of
    an English text and "t": the augmenting BPE then merges and re-splits its last tokens."""
    model, chars = cross(tokenizers, "chars", "bpe")
    ids, mask = encode(chars, ["the th", "they think the", "a"])
    target = chars(" theory then they think", add_special_tokens=False)["input_ids"]

    def allowed(row, sequence):
        step = len(sequence) - ids.shape[1]
        return [target[step], chars.convert_tokens_to_ids("t")]

    kwargs = dict(attention_mask=mask, max_new_tokens=16, do_sample=sample, prefix_allowed_tokens_fn=allowed)
    torch.manual_seed(0)
    cached = model.generate(ids, **kwargs)
    torch.manual_seed(0)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    new = cached[:, ids.shape[1]:]
    assert (new == chars.convert_tokens_to_ids("t")).any() and (new != chars.convert_tokens_to_ids("t")).any()
    rows = [row[row != chars.pad_token_id].tolist() for row in cached]
    assert any(retracts(prefix_tokens(chars, tokenizers["bpe"], row)[-16:]) for row in rows), "no merge was exercised"


@torch.no_grad()
@pytest.mark.parametrize("broken", [False, True])
def test_cached_beam_search_equals_uncached(tokenizers, broken, monkeypatch):
    """Beam search reorders the alignment of each row (its layout, tokens and born lists) with
    the caches; without that (``broken``) the cached beams go elsewhere."""
    model, chars = cross(tokenizers, "chars", "bpe")
    ids, mask = encode(chars, ["the th", "they think the", "a"])
    kwargs = dict(attention_mask=mask, max_new_tokens=10, num_beams=3, num_return_sequences=3, do_sample=False,
                  return_dict_in_generate=True, output_scores=True)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    if broken:
        monkeypatch.setattr(_Alignment, "select", lambda self, rows: None)
    cached = model.generate(ids, **kwargs)
    same = torch.equal(cached.sequences, uncached.sequences)
    if broken:
        assert not same
    else:
        assert same and (cached.sequences_scores - uncached.sequences_scores).abs().max() < 1e-5


@torch.no_grad()
def test_attention_reads_only_the_prefix_tokens(tokenizers):
    """What anchor token t reads is exactly P_t: as many slots as tokenize_A(text_t) has tokens."""
    model, anchor_tok = cross(tokenizers, "chars", "bpe")
    ids = anchor_tok("the theory")["input_ids"]
    with model.capture_attention() as record:
        model(torch.tensor([ids]))
    readable = (record[0][0, 0] > 0).sum(-1).tolist()  # head 0, per anchor token
    assert readable == [len(p) for p in prefix_tokens(anchor_tok, tokenizers["bpe"], ids)]


# ---------------------------------------------------------------- save / load
def test_save_load_is_exact_and_checks_the_tokenizers(tokenizers, tmp_path):
    model, anchor_tok = cross(tokenizers, "chars", "bpe")
    ids, mask = encode(anchor_tok, TEXTS)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridges.safetensors", "calm_config.json"]
    assert set(json.loads((tmp_path / "calm_config.json").read_text())["tokenizers"]) == {"anchor", "augmenting"}
    loaded = CrossTokenizerModel.from_pretrained(tmp_path, model.anchor, model.augmenting[0], anchor_tokenizer=anchor_tok,
                                                 augmenting_tokenizer=tokenizers["bpe"])
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    with pytest.raises(ValueError, match="augmenting tokenizer .* is not the one the bridges were trained with"):
        CrossTokenizerModel.from_pretrained(tmp_path, model.anchor, model.augmenting[0], anchor_tokenizer=anchor_tok,
                                            augmenting_tokenizer=bpe(300, ["other words here"]))
    with pytest.raises(ValueError, match="anchor tokenizer is missing"):
        CrossTokenizerModel.from_pretrained(tmp_path, model.anchor, model.augmenting[0],
                                            augmenting_tokenizer=tokenizers["bpe"])
    with pytest.raises(ValueError, match="tokenize differently.*CrossTokenizerModel.from_pretrained"):
        ComposedModel.from_pretrained(tmp_path, model.anchor, model.augmenting[0])  # not silently shared-token


# ---------------------------------------------------------------- bad input
def test_missing_tokenizer_is_a_clear_error(tokenizers):
    anchor, augmenting = models_for(tokenizers["chars"], tokenizers["bpe"])
    with pytest.raises(ValueError, match="augmenting tokenizer is missing"):
        compose(anchor, augmenting, layers=1, anchor_tokenizer=tokenizers["chars"])
    with pytest.raises(ValueError, match="anchor tokenizer is missing"):
        compose(anchor, augmenting, layers=1, augmenting_tokenizer=tokenizers["bpe"])
    with pytest.raises(ValueError, match="vocabulary .* differs"):
        compose(anchor, augmenting, layers=1)  # without tokenizers, different vocabularies stay an error


def normalising(normalizer) -> PreTrainedTokenizerFast:
    tok = char_tokenizer()
    tok.backend_tokenizer.normalizer = normalizer
    return tok


@pytest.mark.parametrize(
    "normalizer, how",
    [(normalizers.Lowercase(), "lower-cases"),
     (normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()]), "strips accents"),
     (normalizers.BertNormalizer(lowercase=True, strip_accents=True), "lower-cases and strips accents")],
)
def test_a_normalising_tokenizer_is_a_clear_error(tokenizers, normalizer, how):
    tok = normalising(normalizer)
    anchor, augmenting = models_for(tokenizers["bpe"], tok)
    with pytest.raises(ValueError, match=f"does not give back the text .*{how}.*check_text=False"):
        compose(anchor, augmenting, layers=1, anchor_tokenizer=tokenizers["bpe"], augmenting_tokenizer=tok)
    with pytest.raises(ValueError, match=f"anchor tokenizer does not give back.*{how}"):
        compose(augmenting, anchor, layers=1, anchor_tokenizer=tok, augmenting_tokenizer=tokenizers["bpe"])


@torch.no_grad()
def test_check_text_false_reads_the_normalised_text_causally(tokenizers):
    """Documented behaviour: the augmenting model reads its tokenizer's normalisation of the
    anchor's text. A lower-casing augmenting side cannot tell "THE" from "the": only the anchor can."""
    lower = normalising(normalizers.Lowercase())
    anchor_tok = tokenizers["bpe"]
    anchor, augmenting = models_for(anchor_tok, lower)
    model = randomise_bridges(compose(anchor, augmenting, anchor_tokenizer=anchor_tok, augmenting_tokenizer=lower,
                                      check_text=False, **LAYERS))
    ids = anchor_tok("THE theory")["input_ids"]
    with model.capture_attention() as record:
        composed = model(torch.tensor([ids])).logits
    assert not torch.allclose(composed, anchor(torch.tensor([ids])).logits)
    readable = (record[0][0, 0] > 0).sum(-1).tolist()
    assert readable == [len(p) for p in prefix_tokens(anchor_tok, lower, ids)]
    assert lower.convert_ids_to_tokens(prefix_tokens(anchor_tok, lower, ids)[-1])[1:4] == ["t", "h", "e"]


@torch.no_grad()
def test_a_slow_tokenizer_without_offsets_works_like_the_fast_one(tokenizers):
    """Documented behaviour: the rule needs no offset mappings, so slow tokenizers work."""
    slow, fast = SlowChars(), char_tokenizer(SlowChars.ALPHABET)
    anchor_tok = tokenizers["bpe"]
    anchor, augmenting = models_for(anchor_tok, fast)
    with_fast = randomise_bridges(compose(anchor, augmenting, anchor_tokenizer=anchor_tok, augmenting_tokenizer=fast,
                                          check_text=False, **LAYERS))
    with_slow = compose(anchor, augmenting, anchor_tokenizer=anchor_tok, augmenting_tokenizer=slow, check_text=False,
                        **LAYERS)
    with_slow.bridges.load_state_dict(with_fast.bridges.state_dict())
    assert not slow.is_fast
    ids, mask = encode(anchor_tok, TEXTS)
    assert torch.equal(with_slow(ids, attention_mask=mask).logits, with_fast(ids, attention_mask=mask).logits)


def test_other_bad_inputs_are_clear_errors(tokenizers):
    chars, big = tokenizers["chars"], tokenizers["bpe"]
    anchor, augmenting = models_for(chars, chars)
    with pytest.raises(ValueError, match=f"augmenting tokenizer has {len(big)} tokens but the augmenting model's vocabulary"):
        compose(anchor, augmenting, layers=1, anchor_tokenizer=chars, augmenting_tokenizer=big)
    with pytest.raises(TypeError, match="must be a Hugging Face tokenizer"):
        compose(anchor, augmenting, layers=1, anchor_tokenizer=chars, augmenting_tokenizer="gpt2")
    with pytest.raises(NotImplementedError, match="one augmenting model"):
        compose(anchor, [augmenting, tiny("llama", 32, 2, vocab_size=len(chars))], layers=1, anchor_tokenizer=chars,
                augmenting_tokenizer=chars)
    model = compose(anchor, augmenting, layers=1, anchor_tokenizer=chars, augmenting_tokenizer=chars)
    with pytest.raises(ValueError, match="outside 0..162, the vocabulary of the anchor\."):
        model(torch.tensor([[1, 500]]))
    small = tiny("gpt2", 32, 2, vocab_size=len(chars), max_positions=8)
    model = compose(anchor, small, layers=1, anchor_tokenizer=chars, augmenting_tokenizer=chars)
    with pytest.raises(ValueError, match="augmenting tokens but the augmenting model accepts at most 8"):
        model(torch.tensor([chars("a long text")["input_ids"]]))


# ---------------------------------------------------------------- a real anchor
@torch.no_grad()
def test_smollm2_anchor_with_a_character_model(smollm2):
    """SmolLM2's byte-level BPE splits "Ç" over two tokens: the first has no complete character."""
    anchor, anchor_tok = smollm2
    chars = char_tokenizer()
    augmenting = tiny("llama", hidden_size=32, num_layers=2, vocab_size=len(chars), seed=0)
    model = compose(anchor, augmenting, layers=[(1, 0), (1, 29)], anchor_tokenizer=anchor_tok,
                    augmenting_tokenizer=chars)
    enc = anchor_tok(["Ça va? Naïve", "Hello"], return_tensors="pt", padding=True, padding_side="left")
    assert torch.equal(model(**enc).logits, anchor(**enc).logits)
    randomise_bridges(model, std=0.05)
    kwargs = dict(attention_mask=enc["attention_mask"], max_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(enc["input_ids"], **kwargs), model.generate(enc["input_ids"], use_cache=False, **kwargs))
