"""Properties of the composition (../shared/CALM.md): init equivalence, no leakage, padding
invariance, frozen bases, cached == uncached generation, exact save/load, no leaking hooks."""

import json

import pytest
import torch

from calm_mini import ComposedModel, Evenly, compose
from calm_mini.models import tiny
from conftest import VOCAB, make_pair, randomise_bridges


# The paper's placement (layer outputs) and the kit's additions: a bridge into the anchor's
# embeddings (-1), fed from the augmenting model's embeddings and last layer; the recency bias.
OPTIONS = {
    "evenly": dict(layers=Evenly(2)),
    "embeddings": dict(layers=[(-1, -1), (1, 0)]),
    "recency": dict(layers=[(-1, -1), (1, 0)], recency_bias=True),
    "normalized": dict(layers=Evenly(2), recency_bias=True, normalize_inputs=True),
}


@pytest.fixture(params=sorted(OPTIONS))
def layers(request):
    return OPTIONS[request.param]


def composed(pair, options=OPTIONS["evenly"], randomise=True):
    anchor, augmenting = pair
    model = compose(anchor, augmenting, **options)
    return randomise_bridges(model) if randomise else model


@torch.no_grad()
def test_composed_equals_anchor_at_init(pair, ids, layers):
    anchor, augmenting = pair
    expected = anchor(ids).logits
    model = compose(anchor, augmenting, **layers)
    assert (model(ids).logits - expected).abs().max().item() <= 1e-6


@torch.no_grad()
def test_randomised_bridges_change_the_anchor(pair, ids, layers):
    """Guards the other tests: with non-zero W^O the bridges must matter."""
    anchor, _ = pair
    expected = anchor(ids).logits
    model = composed(pair, layers)
    assert (model(ids).logits - expected).abs().max().item() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("t", [1, 5, 11])
def test_no_leakage_from_later_tokens(pair, ids, t, layers):
    model = composed(pair, layers)
    changed = ids.clone()
    changed[:, t] = (changed[:, t] + 7) % VOCAB
    before, after = model(ids).logits, model(changed).logits
    assert torch.equal(before[:, :t], after[:, :t]), "a later token changed an earlier output"
    assert not torch.allclose(before[:, t:], after[:, t:]), "changing the token changed nothing at all"


@torch.no_grad()
def test_no_leakage_through_the_bridges_alone(ids):
    """The anchor's own attention is causal; this checks the bridge mask in isolation: only the
    augmenting model sees a different future token (via a second augmenting copy)."""
    anchor = tiny("llama", hidden_size=32, num_layers=2, vocab_size=VOCAB, seed=1)
    augmenting = tiny("llama", hidden_size=32, num_layers=2, vocab_size=VOCAB, seed=2)
    model = randomise_bridges(compose(anchor, augmenting, layers=1))
    ids = ids.clone()
    ids[:, 6] = 2  # a token that appears nowhere else
    base = model(ids).logits
    with torch.no_grad():  # change what the augmenting model computes from position 6 on
        augmenting.model.embed_tokens.weight[2] += 5.0
    changed = model(ids).logits
    assert torch.equal(base[0, :6], changed[0, :6])
    assert not torch.allclose(base[0, 6:], changed[0, 6:])


def _padded(rows, side):
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[b, span], mask[b, span] = torch.tensor(row), 1
    return ids, mask


@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_single_sequences(pair, side, layers):
    model = composed(pair, layers)
    torch.manual_seed(3)
    rows = [torch.randint(3, VOCAB, (n,)).tolist() for n in (9, 4, 6)]
    ids, mask = _padded(rows, side)
    batch = model(ids, attention_mask=mask).logits
    for b, row in enumerate(rows):
        alone = model(torch.tensor([row])).logits[0]
        real = mask[b].bool()
        torch.testing.assert_close(batch[b][real], alone, atol=2e-5, rtol=1e-4)


def test_only_bridges_train_and_bases_stay_bit_identical(pair, ids):
    anchor, augmenting = pair
    before = {n: p.clone() for m in (anchor, augmenting) for n, p in m.named_parameters(prefix=type(m).__name__ + str(id(m)))}
    model = composed(pair)
    model.train()
    assert not anchor.training and not augmenting.training, "base models must stay in eval mode"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.bridge_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # deliberately all parameters
    bridge_before = [p.clone() for p in model.bridge_parameters()]
    for _ in range(3):
        loss = model(ids, labels=ids).loss
        loss.backward()
        assert all(p.grad is None for m in (anchor, augmenting) for p in m.parameters())
        assert all(p.grad is not None for p in model.bridge_parameters())
        optimizer.step()
        optimizer.zero_grad()
    after = {n: p for m in (anchor, augmenting) for n, p in m.named_parameters(prefix=type(m).__name__ + str(id(m)))}
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert any(not torch.equal(a, b) for a, b in zip(bridge_before, model.bridge_parameters()))


@torch.no_grad()
def test_cached_generation_equals_uncached_batched_left_padded(pair, layers):
    model = composed(pair, layers)
    torch.manual_seed(4)
    rows = [torch.randint(3, VOCAB, (n,)).tolist() for n in (7, 3, 5)]
    ids, mask = _padded(rows, "left")
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(ids, attention_mask=mask, **kwargs)
    uncached = model.generate(ids, attention_mask=mask, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    anchor_alone = pair[0].generate(ids, attention_mask=mask, **kwargs)
    assert not torch.equal(cached, anchor_alone), "bridges should change what is generated"
    for b, row in enumerate(rows):  # and each row decodes as it would alone
        alone = model.generate(torch.tensor([row]), **kwargs)
        assert cached[b, -10:].tolist() == alone[0, -10:].tolist()


@torch.no_grad()
def test_stepwise_forward_with_cache_matches_full_forward(ids):
    anchor, augmenting = make_pair("llama<-gpt2")
    model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    full = model(ids).logits
    out = model(ids[:, :7], use_cache=True)
    step = model(ids[:, 7:], cache=out.cache)
    torch.testing.assert_close(torch.cat([out.logits, step.logits], dim=1), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="not made by this composed model"):
        other = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
        other(ids[:, 7:], cache=out.cache)


@torch.no_grad()
def test_save_load_is_exact_and_writes_only_bridges(pair, ids, tmp_path, layers):
    model = composed(pair, layers)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridges.safetensors", "calm_config.json"]
    config = json.loads((tmp_path / "calm_config.json").read_text())
    assert config["anchor"]["hidden_size"] == model.calm_config.anchor.hidden_size
    anchor, augmenting = pair
    loaded = ComposedModel.from_pretrained(tmp_path, anchor=anchor, augmenting=augmenting)
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_load_refuses_models_that_do_not_fit(tmp_path):
    anchor, augmenting = make_pair("llama<-gpt2")
    compose(anchor, augmenting, layers=Evenly(2)).save_pretrained(tmp_path)
    wider = tiny("gpt2", hidden_size=48, num_layers=2, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="hidden_size: saved 32, given 48"):
        ComposedModel.from_pretrained(tmp_path, anchor=anchor, augmenting=wider)
    other_arch = tiny("qwen2", hidden_size=64, num_layers=4, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="model_type"):
        ComposedModel.from_pretrained(tmp_path, anchor=other_arch, augmenting=augmenting)
    (tmp_path / "bridges.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        ComposedModel.from_pretrained(tmp_path, anchor=anchor, augmenting=augmenting)
    with pytest.raises(FileNotFoundError, match="calm_config.json"):
        ComposedModel.from_pretrained(tmp_path / "missing", anchor=anchor, augmenting=augmenting)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@torch.no_grad()
def test_hooks_never_leak_and_detach_restores_the_anchor(ids):
    anchor, augmenting = make_pair("llama<-gpt2")
    plain = anchor(ids).logits
    flags = [p.requires_grad for p in anchor.parameters()]
    first = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)), seed=1)
    second = randomise_bridges(compose(anchor, augmenting, layers=[(0, 0), (1, 2)]), seed=2)
    out_first, out_second = first(ids).logits, second(ids).logits
    first.generate(ids, max_new_tokens=3, do_sample=False)
    assert not torch.equal(out_first, out_second)
    assert torch.equal(first(ids).logits, out_first), "a second composition disturbed the first"
    with pytest.raises(ValueError):
        first(ids, attention_mask=torch.ones(3, 5))  # an error inside a call must not leave hooks either
    assert _hook_count(anchor) == 0 and _hook_count(augmenting) == 0
    assert torch.equal(anchor(ids).logits, plain)
    returned, _ = first.detach()
    assert returned is anchor
    assert [p.requires_grad for p in anchor.parameters()] == flags


@torch.no_grad()
def test_several_augmenting_models(ids):
    anchor = tiny("llama", hidden_size=64, num_layers=4, vocab_size=VOCAB, seed=1)
    code = tiny("gpt2", hidden_size=32, num_layers=2, vocab_size=VOCAB, seed=2)
    lang = tiny("qwen2", hidden_size=48, num_layers=4, vocab_size=VOCAB, seed=3)
    model = compose(anchor, [code, lang], layers=[[(1, 1)], Evenly(2)])
    assert [(s.augmenting, s.augmenting_layer, s.anchor_layer) for s in model.specs] == [(0, 1, 1), (1, 1, 1), (1, 3, 3)]
    torch.testing.assert_close(model(ids).logits, anchor(ids).logits, atol=1e-6, rtol=0)
    randomise_bridges(model)
    changed = ids.clone()
    changed[:, 8] = 5
    assert torch.equal(model(ids).logits[:, :8], model(changed).logits[:, :8])
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(model.generate(ids, **kwargs), model.generate(ids, use_cache=False, **kwargs))


@torch.no_grad()
def test_bfloat16_models_get_float32_bridges_unless_asked(ids):
    anchor = tiny("llama", hidden_size=64, num_layers=2, vocab_size=VOCAB).to(torch.bfloat16)
    augmenting = tiny("gpt2", hidden_size=32, num_layers=2, vocab_size=VOCAB).to(torch.bfloat16)
    model = compose(anchor, augmenting, layers=1)
    assert all(p.dtype == torch.float32 for p in model.bridge_parameters())
    assert torch.equal(model(ids).logits, anchor(ids).logits)
    randomise_bridges(model)
    assert model(ids).logits.dtype == torch.bfloat16
    model = compose(anchor, augmenting, layers=1, bridge_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.bridge_parameters())
    model.to(torch.float32)
    assert anchor.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.bridge_parameters())


@torch.no_grad()
def test_attention_capture_shapes_masks_and_unchanged_outputs():
    anchor, augmenting = make_pair("llama<-gpt2")
    model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    ids, mask = _padded([[5, 6, 7, 8, 9], [10, 11, 12]], "left")
    plain = model(ids, attention_mask=mask).logits
    with model.capture_attention() as record:
        captured = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    assert record.bridges() == [0, 1]
    weights = record[0]
    assert weights.shape == (2, model.calm_config.num_heads, 5, 5)
    assert torch.all(weights.triu(diagonal=1) == 0), "future positions must be exact zeros"
    assert torch.all(weights[1, :, :, :2] == 0) and torch.all(weights[1, :, :2, :] == 0), "padding must be zeros"
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(model.calm_config.num_heads, 5))
    torch.testing.assert_close(weights[1, :, 2:].sum(-1), torch.ones(model.calm_config.num_heads, 3))
    assert not any(point.active for point in model.hook_points().values()), "capture hooks are removed"


@torch.no_grad()
def test_attention_capture_during_cached_generation():
    anchor, augmenting = make_pair("llama<-gpt2")
    model = randomise_bridges(compose(anchor, augmenting, layers=Evenly(2)))
    ids = torch.tensor([[5, 6, 7, 8]])
    with model.capture_attention() as record:
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    weights = record[1]
    assert weights.shape == (1, model.calm_config.num_heads, 7, 7)  # the last new token is never fed back
    assert torch.all(weights.triu(diagonal=1) == 0)
    full = model.capture_attention()
    with full as again:
        model(out[:, :-1])
    torch.testing.assert_close(again[1], weights, atol=1e-5, rtol=1e-4)


def _with_weights(bridge, *args):
    """The bridge's output and its attention weights, read at its hook point."""
    seen = []
    handle = bridge.hook_attention.register_forward_hook(lambda module, inputs, weights: seen.append(weights))
    try:
        return bridge(*args), seen[0]
    finally:
        handle.remove()


@torch.no_grad()
def test_normalized_bridges_are_scale_equivariant():
    """Real models' hidden states are large; with normalize_inputs a bridge attends the same
    whatever their scale and adds in proportion to the anchor state (without it, scaling
    sharpens the attention and the output ignores the anchor state's scale)."""
    from calm_mini import Bridge

    torch.manual_seed(0)
    h_b, h_a = torch.randn(2, 5, 32), torch.randn(2, 7, 16)
    mask = torch.ones(2, 5, 7, dtype=torch.bool)
    for normalize, same in ((True, True), (False, False)):
        bridge = Bridge(16, 32, 4, normalize_inputs=normalize)
        torch.nn.init.normal_(bridge.out.weight)
        delta, small = _with_weights(bridge, h_b, *bridge.keys_values(h_a), mask)
        delta_large, large = _with_weights(bridge, 300 * h_b, *bridge.keys_values(300 * h_a), mask)
        assert torch.allclose(small, large, atol=1e-5) == same
        assert torch.allclose(delta_large, 300 * delta, rtol=1e-4, atol=1e-3) == same
        scaled = bridge(7 * h_b, *bridge.keys_values(h_a), mask)  # only the anchor state grows
        assert torch.allclose(scaled, 7 * delta, rtol=1e-4, atol=1e-4) == same


def test_normalized_bridges_train_without_gradients_through_the_scale():
    """The anchor state's RMS multiplies a normalised bridge's output as a constant: the
    gradient reaching the anchor state is the same as without the factor's own derivative."""
    from calm_mini import Bridge

    torch.manual_seed(0)
    bridge = Bridge(16, 32, 4, normalize_inputs=True)
    torch.nn.init.normal_(bridge.out.weight)
    h_b = torch.randn(1, 3, 32)
    h_b[:, 0] = 0  # a state of RMS 0, as a padding position's can be
    h_b.requires_grad_()
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    delta = bridge(h_b, *bridge.keys_values(torch.randn(1, 4, 16)), mask)
    delta.sum().backward()
    assert torch.isfinite(h_b.grad).all() and h_b.grad.abs().sum() > 0


def test_normalize_inputs_is_saved_and_loaded(tmp_path, ids):
    anchor, augmenting = make_pair("llama<-gpt2")
    model = randomise_bridges(compose(anchor, augmenting, layers=1, normalize_inputs=True))
    model.save_pretrained(tmp_path)
    loaded = ComposedModel.from_pretrained(tmp_path, anchor, augmenting)
    assert loaded.calm_config.normalize_inputs and all(b.normalize_inputs for b in loaded.bridges)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
