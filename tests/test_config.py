"""One CALMConfig: what compose() builds, what the model keeps, what calm_config.json holds.
Save → load round-trips it (dtype included); version 1 files (before bridge_dtype) still load."""

import json
from pathlib import Path

import pytest
import torch

from calm_mini import CALMConfig, ComposedModel, compose
from calm_mini.core.config import VERSION
from conftest import make_pair, randomise_bridges

V1 = Path(__file__).parent / "fixtures" / "behaviour_v1" / "recency" / "calm_config.json"


def test_the_config_is_what_is_saved_and_loaded(tmp_path):
    anchor, augmenting = make_pair("llama<-gpt2")
    model = compose(anchor, augmenting, layers=[(0, 1), (1, 3)], recency_bias=True, bridge_dtype=torch.bfloat16)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "calm_config.json").read_text())
    assert saved == model.calm_config.to_dict() and saved["version"] == VERSION and saved["bridge_dtype"] == "bfloat16"
    loaded = ComposedModel.from_pretrained(tmp_path, anchor, augmenting)
    assert loaded.calm_config == model.calm_config
    assert all(p.dtype == torch.bfloat16 for p in loaded.bridges.parameters()), "the bridges' dtype is saved"
    assert CALMConfig.from_dict(model.calm_config.to_dict()) == model.calm_config


def test_version_1_files_load_with_the_defaults_of_then():
    old = json.loads(V1.read_text())
    assert old["version"] == 1 and "bridge_dtype" not in old
    config = CALMConfig.from_dict(old)
    assert config.bridge_dtype == "float32" and config.variant == "shared_tokens" and config.recency_bias
    crosstok = json.loads((V1.parent.parent / "crosstok" / "calm_config.json").read_text())
    assert CALMConfig.from_dict(crosstok).variant == "cross_tokenizer"


@pytest.mark.parametrize("change, message", [
    ({"format": "peft"}, "not a calm_mini bridge config"),
    ({"version": 99}, "not a calm_mini bridge config"),
    ({"bridge_dtype": "float33"}, "not a torch dtype"),
    ({"layer_maps": []}, "layer maps for 1 augmenting"),
])
def test_a_bad_config_is_a_clear_error(tmp_path, change, message):
    anchor, augmenting = make_pair("llama<-gpt2")
    randomise_bridges(compose(anchor, augmenting, layers=1)).save_pretrained(tmp_path)
    path = tmp_path / "calm_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        ComposedModel.from_pretrained(tmp_path, anchor, augmenting)
