"""Finding decoder layers, building and checking layer maps, the parameter-count formula."""

import pytest
import torch
from torch import nn

from calm_mini import EveryK, Evenly, LayerMap, ModelShape, bridge_parameter_count, compose, decoder_layers
from calm_mini.core.layers import evenly_spaced, resolve_layer_map
from calm_mini.models import TINY_ARCHITECTURES, tiny
from conftest import VOCAB


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_decoder_layers_found_for_each_architecture(arch):
    model = tiny(arch, num_layers=3, vocab_size=VOCAB)
    layers = decoder_layers(model)
    assert isinstance(layers, nn.ModuleList) and len(layers) == 3
    shape = ModelShape.of(model)
    assert (shape.num_layers, shape.hidden_size, shape.vocab_size) == (3, 64, VOCAB)


def test_unknown_architecture_says_how_to_name_its_layers():
    model = tiny("llama", num_layers=2, vocab_size=VOCAB)
    model.model.blocks = model.model.layers  # pretend the blocks live elsewhere
    del model.model.layers
    model.config.num_hidden_layers = 7  # and the fallback search finds nothing of that length
    with pytest.raises(ValueError, match="anchor_layers_path"):
        decoder_layers(model)
    assert len(decoder_layers(model, "model.blocks")) == 2
    with pytest.raises(ValueError, match="no attribute path"):
        decoder_layers(model, "model.nothing")


def shapes(n_aug, n_anchor, d_aug=64, d_anchor=128):
    return (ModelShape(n_aug, d_aug, 4, VOCAB, 512, "llama"), ModelShape(n_anchor, d_anchor, 8, VOCAB, 512, "llama"))


def test_every_k_is_the_papers_default():
    aug, anchor = shapes(12, 30)
    m = resolve_layer_map(4, aug, anchor)
    assert m.augmenting == (3, 7, 11) and m.anchor == (9, 19, 29)
    assert resolve_layer_map(EveryK(4), aug, anchor) == m
    # a depth that k does not divide: every 4th of 30 layers gives 7 bridges, none dropped silently
    assert resolve_layer_map(4, *shapes(30, 30)).augmenting == (3, 7, 11, 15, 19, 23, 27)


def test_evenly_spaced_and_explicit_maps():
    aug, anchor = shapes(2, 4)
    assert resolve_layer_map(Evenly(4), aug, anchor).pairs == [(0, 0), (0, 1), (1, 2), (1, 3)]
    assert resolve_layer_map(Evenly(2), aug, anchor).pairs == [(0, 1), (1, 3)]
    assert resolve_layer_map([(0, 1), (1, 2)], aug, anchor).pairs == [(0, 1), (1, 2)]
    assert evenly_spaced(30, 3) == [9, 19, 29]


@pytest.mark.parametrize(
    "spec, message",
    [
        ([(0, 1), (5, 2)], "Augmenting layer\\(s\\) \\[5\\] out of range"),
        ([(0, 4)], "Anchor layer\\(s\\) \\[4\\] out of range"),
        ([(0, 2), (1, 2)], "strictly increase"),
        ([(1, 1), (0, 2)], "must not decrease"),
        ([], "at least one"),
        ([(0, 1, 2)], "tuples"),
        (EveryK(3), "no bridge"),
        (Evenly(5), "Evenly\\(5\\) needs"),
    ],
)
def test_bad_layer_maps_get_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_layer_map(spec, *shapes(2, 4))


def test_unequal_counts_are_refused():
    with pytest.raises(ValueError, match="as many augmenting layers as anchor layers"):
        LayerMap(augmenting=(0, 1, 1), anchor=(1, 2))


@pytest.mark.parametrize("d_aug, d_anchor, heads", [(32, 64, 4), (64, 48, 3), (96, 96, 8)])
def test_parameter_count_formula_matches_the_real_count(d_aug, d_anchor, heads):
    anchor = tiny("llama", hidden_size=d_anchor, num_layers=4, num_heads=heads, vocab_size=VOCAB)
    augmenting = tiny("gpt2", hidden_size=d_aug, num_layers=4, num_heads=4, vocab_size=VOCAB)
    model = compose(anchor, augmenting, layers=2)
    real = model.num_bridge_parameters()
    assert real == bridge_parameter_count(d_aug, d_anchor, n=2)
    assert real == 2 * (d_aug * d_anchor + 4 * d_anchor**2) + 2 * 5 * d_anchor
    assert f"{real:,} parameters" in model.summary()
    assert real == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_summary_lists_every_bridge():
    anchor = tiny("llama", hidden_size=64, num_layers=8, vocab_size=VOCAB)
    augmenting = tiny("gpt2", hidden_size=32, num_layers=8, vocab_size=VOCAB)
    text = compose(anchor, augmenting, layers=4).summary()
    assert "D_A=32" in text and "D_B=64" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(r[1]), int(r[2])) for r in rows] == [(3, 3), (7, 7)]
    assert torch.is_tensor(next(anchor.parameters()))


def test_embeddings_are_layer_minus_one():
    aug, anchor = shapes(2, 4)
    assert resolve_layer_map([(-1, -1), (1, 0)], aug, anchor).pairs == [(-1, -1), (1, 0)]
    with pytest.raises(ValueError, match="-1: the embeddings"):
        resolve_layer_map([(0, -2)], aug, anchor)


def test_recency_bias_adds_one_slope_per_head():
    anchor = tiny("llama", hidden_size=64, num_layers=4, num_heads=4, vocab_size=VOCAB)
    augmenting = tiny("gpt2", hidden_size=32, num_layers=4, vocab_size=VOCAB)
    model = compose(anchor, augmenting, layers=2, recency_bias=True)
    assert model.num_bridge_parameters() == bridge_parameter_count(32, 64, n=2, recency_heads=4)
    assert f"{model.num_bridge_parameters():,} parameters" in model.summary()
