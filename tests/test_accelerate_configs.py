"""The accelerate config files in examples/accelerate/ are read by accelerate's own loader and
launcher (offline, no GPU): every key is one that ``accelerate launch`` knows, and its FSDP
plugin accepts every value and finds the layers it is told to wrap in a Llama (SmolLM2's class)."""

from pathlib import Path

from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env

from calm_mini.models import tiny

FSDP = Path(__file__).resolve().parents[1] / "examples" / "accelerate" / "fsdp.yaml"


def test_the_fsdp_config_loads_and_every_value_is_accepted(monkeypatch):
    config = load_config_from_file(str(FSDP))  # raises on keys accelerate does not know
    assert config.distributed_type == DistributedType.FSDP and config.mixed_precision == "no"
    options = {action.dest for action in launch_command_parser()._actions}
    assert set(config.fsdp_config) <= options, set(config.fsdp_config) - options

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(FSDP), "x.py"]))
    env = prepare_multi_gpu_env(args)  # the environment `accelerate launch` gives each process
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "1"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")  # needs a GPU to build its init function
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.sharding_strategy.name == "FULL_SHARD" and plugin.use_orig_params
    assert plugin.state_dict_type.name == "FULL_STATE_DICT" and plugin.backward_prefetch.name == "BACKWARD_PRE"
    plugin.set_auto_wrap_policy(tiny("llama", hidden_size=32, num_layers=2, vocab_size=64))  # raises if no such layer
    assert plugin.auto_wrap_policy is not None

