"""The generate modes a user reaches for, composed: beam search (the augmenting caches and the
bridges' keys/values follow the beams), sampling with a seed, several sequences per prompt,
stop strings and streaming."""

import pytest
import torch
from transformers import DynamicCache, TextStreamer

from calm_mini import Evenly, compose
from calm_mini.core.state import ComposedCache
from calm_mini.models import tiny
from conftest import VOCAB, make_pair, randomise_bridges
from test_crosstok import bpe

def composed(name="llama<-gpt2", **options):
    anchor, augmenting = make_pair(name)
    torch.manual_seed(0)  # the bridges' initial weights
    return randomise_bridges(compose(anchor, augmenting, **(options or dict(layers=Evenly(2)))))


def left_padded(lengths=(7, 3, 5), seed=4):
    torch.manual_seed(seed)
    rows = [torch.randint(3, VOCAB, (n,)) for n in lengths]
    ids = torch.zeros(len(rows), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, -len(row):], mask[b, -len(row):] = row, 1
    return ids, mask


GREEDY = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)


@torch.no_grad()
@pytest.mark.parametrize("name, options", [
    ("llama<-gpt2", dict(layers=Evenly(2))),
    ("qwen2<-llama", dict(layers=[(-1, -1), (1, 0)], recency_bias=True)),
    ("gemma<-qwen2", dict(layers=Evenly(2), recency_bias=True, normalize_inputs=True)),
])
def test_cached_beam_search_equals_uncached(name, options):
    model = composed(name, **options)
    ids, mask = left_padded()
    kwargs = dict(GREEDY, num_beams=4, num_return_sequences=2, return_dict_in_generate=True, output_scores=True)
    cached = model.generate(ids, attention_mask=mask, **kwargs)
    uncached = model.generate(ids, attention_mask=mask, use_cache=False, **kwargs)
    assert cached.sequences.shape == (6, ids.shape[1] + 8)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_beam_search_needs_the_augmenting_side_reordered(monkeypatch):
    """Guards the test above: the beams do change parents, so reordering only the anchor's cache
    (what a plain cache does) scores other beams than the uncached search."""
    model = composed()
    ids, mask = left_padded()
    kwargs = dict(GREEDY, num_beams=4, num_return_sequences=4, return_dict_in_generate=True, output_scores=True)
    uncached = model.generate(ids, attention_mask=mask, use_cache=False, **kwargs)
    monkeypatch.setattr(ComposedCache, "reorder_cache", DynamicCache.reorder_cache)
    broken = model.generate(ids, attention_mask=mask, **kwargs)
    assert (broken.sequences_scores - uncached.sequences_scores).abs().max() > 1e-3


@torch.no_grad()
def test_beam_search_with_a_plain_cache_is_refused():
    model = composed()
    ids, mask = left_padded()
    with pytest.raises(ValueError, match="Pass no cache"):
        model.generate(ids, attention_mask=mask, num_beams=2, cache=DynamicCache(), **GREEDY)


@torch.no_grad()
def test_sampling_with_a_seed_repeats_and_other_seeds_differ():
    model = composed()
    ids, mask = left_padded()
    kwargs = dict(GREEDY, do_sample=True, top_k=0, temperature=1.5, num_return_sequences=3)

    def sample(seed, **extra):
        torch.manual_seed(seed)
        return model.generate(ids, attention_mask=mask, **kwargs, **extra)

    first = sample(0)
    assert first.shape == (9, ids.shape[1] + 8)  # num_return_sequences rows per prompt, in order
    assert torch.equal(first, sample(0))
    assert torch.equal(first, sample(0, use_cache=False))
    assert not torch.equal(first, sample(1))
    assert not torch.equal(first[0], first[1]), "the sequences of one prompt are all the same"
    assert torch.equal(first[::3, : ids.shape[1]], ids)


@pytest.fixture(scope="module")
def with_tokenizer():
    """A composition of tiny models over a small byte-level BPE (stop strings need a tokenizer
    that can spell any text)."""
    tokenizer = bpe(300)
    vocab = len(tokenizer)
    anchor = tiny("llama", hidden_size=64, num_layers=2, vocab_size=vocab, seed=1)
    augmenting = tiny("gpt2", hidden_size=32, num_layers=2, vocab_size=vocab, seed=2)
    return randomise_bridges(compose(anchor, augmenting, layers=Evenly(2))), tokenizer


@torch.no_grad()
def test_stop_strings_end_generation_where_the_text_appears(with_tokenizer):
    model, tokenizer = with_tokenizer
    ids = tokenizer("the theory", return_tensors="pt")["input_ids"]
    kwargs = dict(max_new_tokens=24, do_sample=True, top_k=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)

    def new_tokens(**extra) -> list[int]:
        torch.manual_seed(0)  # the same draws: a stopped run is a prefix of the free one
        return model.generate(ids, **kwargs, **extra)[0, ids.shape[1]:].tolist()

    free = new_tokens()
    text = [tokenizer.decode(free[: i + 1]) for i in range(len(free))]  # the text after each new token
    stop = next(tokenizer.decode(free[i]) for i in range(3, len(free))
                if tokenizer.decode(free[i]).isalnum() and tokenizer.decode(free[i]) not in text[i - 1])
    stopped = new_tokens(stop_strings=[stop], tokenizer=tokenizer)
    end = next(i for i, t in enumerate(text) if stop in t)  # where the free text first holds the stop string
    assert stopped == free[: end + 1]
    assert len(stopped) < len(free)


@torch.no_grad()
def test_a_text_streamer_prints_what_is_generated(with_tokenizer, capsys):
    model, tokenizer = with_tokenizer
    ids = tokenizer("they think", return_tensors="pt")["input_ids"]
    out = model.generate(ids, streamer=TextStreamer(tokenizer, skip_prompt=True), max_new_tokens=10,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    printed = capsys.readouterr().out.strip()
    assert printed and printed == tokenizer.decode(out[0, ids.shape[1]:]).strip()
