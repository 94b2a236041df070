"""Behaviour pinned before the reorganisation: bridges saved in format version 1 by the code of
that time, with the logits and greedy tokens they gave. The same inputs must give the same
numbers, bit for bit, through today's code — for the plain, recency, normalised and
cross-tokenizer variants.

The fixture was written once, by ``python tests/test_fixture.py --write`` on the commit that
added it; rerunning that would only pin today's behaviour, so it is not part of the tests.
"""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from calm_mini import ComposedModel, compose
from calm_mini.crosstok import CrossTokenizerModel
from calm_mini.crosstok import char_tokenizer
from calm_mini.models import tiny

FIXTURE = Path(__file__).parent / "fixtures" / "behaviour_v1"
VARIANTS = {
    "plain": dict(layers=[(0, 1), (1, 3)]),
    "recency": dict(layers=[(1, -1), (1, 0), (1, 2)], recency_bias=True),
    "normalized": dict(layers=[(0, 0), (1, 2)], recency_bias=True, normalize_inputs=True),
    "crosstok": dict(layers=[(-1, -1), (1, 0), (1, 2)], recency_bias=True),
}
TEXTS = ["the theory then", "they think", "a"]


def base_models(anchor_vocab: int, augmenting_vocab: int):
    anchor = tiny("llama", hidden_size=64, num_layers=4, vocab_size=anchor_vocab, seed=1)
    augmenting = tiny("gpt2", hidden_size=32, num_layers=2, vocab_size=augmenting_vocab, seed=2)
    return anchor, augmenting


def inputs(variant: str, anchor_tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch: token ids (3, T) and attention mask (3, T)."""
    if variant == "crosstok":
        anchor_tokenizer.padding_side = "left"
        enc = anchor_tokenizer(TEXTS, return_tensors="pt", padding=True)
        return enc["input_ids"], enc["attention_mask"]
    ids = torch.randint(3, 128, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :6] = 0
    return ids.masked_fill(mask == 0, 0), mask


def outputs(model, ids, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        tokens = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    return {"logits": logits.contiguous(), "tokens": tokens.contiguous()}


def write_fixture() -> None:
    """Compose each variant, give its bridges random output projections, save them (format v1)
    and record the outputs."""
    for variant, options in VARIANTS.items():
        folder = FIXTURE / variant
        kwargs, anchor_tok = {}, None
        if variant == "crosstok":
            from test_crosstok import bpe

            anchor_tok, augmenting_tok = char_tokenizer(), bpe(300)
            augmenting_tok.save_pretrained(folder / "augmenting_tokenizer")
            kwargs = dict(anchor_tokenizer=anchor_tok, augmenting_tokenizer=augmenting_tok)
            anchor, augmenting = base_models(len(anchor_tok), len(augmenting_tok))
        else:
            anchor, augmenting = base_models(128, 128)
        torch.manual_seed(0)
        model = compose(anchor, augmenting, **options, **kwargs)
        with torch.no_grad():
            for bridge in model.bridges:
                scale = 3.0 if bridge.normalize_inputs else 0.3
                bridge.out.weight.normal_(0, scale)
                bridge.out.bias.normal_(0, scale)
        model.save_pretrained(folder)
        save_file(outputs(model, *inputs(variant, anchor_tok)), folder / "expected.safetensors")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_numbers_as_before_the_reorganisation(variant):
    folder = FIXTURE / variant
    if variant == "crosstok":
        anchor_tok = char_tokenizer()
        augmenting_tok = AutoTokenizer.from_pretrained(folder / "augmenting_tokenizer")
        anchor, augmenting = base_models(len(anchor_tok), len(augmenting_tok))
        model = CrossTokenizerModel.from_pretrained(folder, anchor, augmenting, anchor_tokenizer=anchor_tok,
                                                    augmenting_tokenizer=augmenting_tok)
    else:
        anchor_tok = None
        model = ComposedModel.from_pretrained(folder, *base_models(128, 128))
    expected = load_file(folder / "expected.safetensors")
    got = outputs(model, *inputs(variant, anchor_tok))
    assert torch.equal(got["tokens"], expected["tokens"])
    assert torch.equal(got["logits"], expected["logits"]), (got["logits"] - expected["logits"]).abs().max()


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    write_fixture()
