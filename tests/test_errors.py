"""Bad input gets a clear error that says what was wrong and how to fix it."""

import pytest
import torch
from transformers import AutoModel, LlamaConfig

from calm_mini import compose
from calm_mini.core import Bridge
from calm_mini.models import tiny
from conftest import VOCAB


@pytest.fixture
def models():
    return tiny("llama", hidden_size=64, num_layers=4, vocab_size=VOCAB, max_positions=32), tiny(
        "gpt2", hidden_size=32, num_layers=2, vocab_size=VOCAB, max_positions=32
    )


def test_vocabularies_that_differ(models):
    anchor, _ = models
    other = tiny("gpt2", hidden_size=32, num_layers=2, vocab_size=VOCAB + 5)
    with pytest.raises(ValueError, match="same tokenizer"):
        compose(anchor, other, layers=1)
    compose(anchor, other, layers=1, check_vocab=False)  # the documented way out


def test_heads_must_divide_the_anchor_width(models):
    with pytest.raises(ValueError, match="must divide the anchor width D_B=64"):
        compose(*models, layers=1, num_heads=5)
    with pytest.raises(ValueError, match="num_heads=0"):
        Bridge(32, 64, 0)


def test_a_model_that_is_not_a_causal_lm(models):
    anchor, augmenting = models
    backbone = AutoModel.from_config(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, vocab_size=VOCAB))
    with pytest.raises(TypeError, match="causal LM"):
        compose(anchor, backbone, layers=1)
    with pytest.raises(TypeError, match="causal LM"):
        compose(torch.nn.Linear(3, 3), augmenting, layers=1)
    with pytest.raises(ValueError, match="different model objects"):
        compose(anchor, anchor, layers=1)


def test_an_input_longer_than_a_model_accepts(models):
    model = compose(*models, layers=1)
    with pytest.raises(ValueError, match="accepts at most 32"):
        model(torch.randint(3, VOCAB, (1, 40)))
    with pytest.raises(ValueError, match="accepts at most 32"):
        model.generate(torch.randint(3, VOCAB, (1, 30)), max_new_tokens=5, do_sample=False, eos_token_id=None)


def test_a_mask_whose_shape_differs_from_the_ids(models):
    model = compose(*models, layers=1)
    ids = torch.randint(3, VOCAB, (2, 6))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\)"):
        model(ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.generate(ids, attention_mask=torch.ones(1, 6), max_new_tokens=2)


def test_ids_that_are_not_ids(models):
    model = compose(*models, layers=1)
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.randn(2, 6))
    with pytest.raises(ValueError, match="outside 0..127"):
        model(torch.tensor([[1, 2, 300]]))
    with pytest.raises(ValueError, match="input_ids is empty"):  # before: an IndexError inside transformers
        model(torch.zeros(1, 0, dtype=torch.long))


def test_layer_spec_count_must_match_augmenting_models(models):
    anchor, augmenting = models
    second = tiny("qwen2", hidden_size=32, num_layers=2, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="3 entries but there are 2 augmenting models"):
        compose(anchor, [augmenting, second], layers=[1, 1, 1])


@pytest.mark.parametrize(
    "layers, error, message",
    [
        ((0, 1), ValueError, r"looks like one pair: write it as a list of pairs, \[\(0, 1\)\]"),
        ([], ValueError, "layers is empty"),
        ([(1, 2, 3)], ValueError, "Layer pairs are \\(augmenting_layer, anchor_layer\\) tuples"),
        (2.5, TypeError, "layers must be an int k"),
    ],
)
def test_layer_specs_that_are_easy_to_get_wrong(models, layers, error, message):
    with pytest.raises(error, match=message):
        compose(*models, layers=layers)
