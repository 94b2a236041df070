"""The bridge against a naive implementation of the paper's equation written here, head by head:

    H_A' = f_proj(H_A^i);  head_k = softmax(mask(Q_k K_k^T / sqrt(d))) V_k;  f_cross = Concat_k(head_k) W^O

with Q from H_B^j and K, V from H_A'. Also the kit's two options (recency bias, normalised
inputs), the zero start of W^O, the hook points, and rows with nothing to read."""

import math

import pytest
import torch

from calm_mini.core import Bridge

D_A, D_B, HEADS = 12, 16, 4


def naive(bridge: Bridge, h_b: torch.Tensor, h_a: torch.Tensor, mask: torch.Tensor, distance=None) -> torch.Tensor:
    """f_cross(f_proj(H_A), H_B) for one sequence: h_b (T, D_B), h_a (S, D_A), mask (T, S) bool."""
    rms = lambda x: x / x.pow(2).mean(-1, keepdim=True).add(torch.finfo(x.dtype).eps).sqrt()  # noqa: E731
    if bridge.normalize_inputs:
        h_b_read, h_a = rms(h_b), rms(h_a)
    else:
        h_b_read = h_b
    projected = h_a @ bridge.proj.weight.T + bridge.proj.bias  # (S, D_B)
    q = h_b_read @ bridge.query.weight.T + bridge.query.bias
    k = projected @ bridge.key.weight.T + bridge.key.bias
    v = projected @ bridge.value.weight.T + bridge.value.bias
    d = D_B // HEADS
    heads = []
    for h in range(HEADS):
        cols = slice(h * d, (h + 1) * d)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)  # (T, S)
        if bridge.recency is not None:
            scores = scores - torch.nn.functional.softplus(bridge.recency[h]) * distance
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.where(mask.any(-1, keepdim=True), scores.softmax(-1), torch.zeros_like(scores))
        heads.append(weights.nan_to_num(0.0) @ v[:, cols])
    out = torch.cat(heads, dim=-1) @ bridge.out.weight.T + bridge.out.bias  # (T, D_B)
    if bridge.normalize_inputs:
        out = out * h_b.pow(2).mean(-1, keepdim=True).sqrt()
    return out


def random_bridge(**options) -> Bridge:
    torch.manual_seed(0)
    bridge = Bridge(D_A, D_B, HEADS, **options)
    torch.nn.init.normal_(bridge.out.weight, std=0.5)
    torch.nn.init.normal_(bridge.out.bias, std=0.5)
    return bridge


@pytest.mark.parametrize("options", [{}, {"recency_bias": True}, {"normalize_inputs": True},
                                     {"recency_bias": True, "normalize_inputs": True}], ids=str)
def test_bridge_is_the_papers_equation(options):
    bridge = random_bridge(**options)
    torch.manual_seed(1)
    h_b, h_a = torch.randn(2, 5, D_B), torch.randn(2, 7, D_A)
    mask = torch.rand(2, 5, 7) > 0.4
    mask[0, 2] = False  # a row with nothing to read: its heads are zero, only W^O's bias is added
    distance = torch.arange(5)[:, None] - torch.arange(7)[None, :]
    got = bridge(h_b, *bridge.keys_values(h_a), mask, distance)
    for b in range(2):
        torch.testing.assert_close(got[b], naive(bridge, h_b[b], h_a[b], mask[b], distance.float()), atol=1e-5, rtol=1e-4)


def test_a_new_bridge_adds_exactly_zero():
    bridge = Bridge(D_A, D_B, HEADS, recency_bias=True)
    h_b, h_a = torch.randn(1, 3, D_B), torch.randn(1, 4, D_A)
    out = bridge(h_b, *bridge.keys_values(h_a), torch.ones(1, 3, 4, dtype=torch.bool), torch.zeros(3, 4))
    assert torch.equal(out, torch.zeros_like(out))


def test_hook_points_see_and_change_what_flows():
    bridge = random_bridge()
    h_b, h_a = torch.randn(1, 3, D_B), torch.randn(1, 4, D_A)
    mask = torch.ones(1, 3, 4, dtype=torch.bool).tril(1)
    seen = {}
    handles = [bridge.hook_augmenting.register_forward_hook(lambda m, a, x: seen.update(augmenting=x)),
               bridge.hook_attention.register_forward_hook(lambda m, a, w: seen.update(attention=w)),
               bridge.hook_output.register_forward_hook(lambda m, a, y: seen.update(output=y))]
    out = bridge(h_b, *bridge.keys_values(h_a), mask)
    for handle in handles:
        handle.remove()
    assert torch.equal(seen["augmenting"], h_a) and torch.equal(seen["output"], out)
    assert seen["attention"].shape == (1, HEADS, 3, 4)
    torch.testing.assert_close(seen["attention"].sum(-1), torch.ones(1, HEADS, 3))
    assert (seen["attention"][~mask[:, None].expand(-1, HEADS, -1, -1)] == 0).all(), "masked positions get no weight"
    torch.testing.assert_close(out, bridge(h_b, *bridge.keys_values(h_a), mask), atol=1e-6, rtol=1e-5)
    handle = bridge.hook_output.register_forward_hook(lambda m, a, y: torch.zeros_like(y))
    assert torch.equal(bridge(h_b, *bridge.keys_values(h_a), mask), torch.zeros(1, 3, D_B)), "a hook replaces the output"
    handle.remove()


@pytest.mark.parametrize("recency_bias", [False, True])
@pytest.mark.parametrize("past, new", [(0, 12), (11, 1), (8, 4)])
def test_no_mask_is_the_causal_mask_bit_for_bit(past, new, recency_bias):
    """mask=None (nothing padded) leaves the causal order to attention itself: the same numbers
    as the explicit mask s ≤ t, bit for bit, forward and backward."""
    bridge = random_bridge(recency_bias=recency_bias)
    t, s = torch.arange(past, past + new)[:, None], torch.arange(past + new)
    explicit = (s <= t).expand(2, new, past + new)  # (B, T, S)
    h_b, h_a = torch.randn(2, new, D_B), torch.randn(2, past + new, D_A)
    results = []
    for mask in (None, explicit):
        bridge.zero_grad()
        delta = bridge(h_b, *bridge.keys_values(h_a), mask, (t - s).float())
        delta.square().sum().backward()
        results.append([delta, *(p.grad for p in bridge.parameters())])
    for fast, masked in zip(*results):
        assert torch.equal(fast, masked)
