"""Configuration loading: types, unknown keys, impossible values, overrides, round trip."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import tiny_raw
from transmem.config import ConfigError, RunConfig, config_from_dict, load_config, parse_override, save_config, validate


def test_defaults_are_valid():
    validate(RunConfig())


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"lrr": 1e-3}}, r"train\.lrr: unknown key \(did you mean 'lr'\?\)"),
        ({"trian": {}}, r"trian: unknown key"),
        ({"train": {"lr": "fast"}}, r"train\.lr: expected a number, got 'fast'"),
        ({"train": {"iterations": 1.5}}, r"train\.iterations: expected an integer"),
        ({"data": {"input_len": 20, "total_len": 20}}, r"data\.input_len: must be smaller than data\.total_len"),
        ({"data": {"frame_size": 30}, "model": {"patch": 4}}, r"model\.patch: frame size 30 is not divisible by patch 4"),
        ({"model": {"hidden": []}}, r"model\.hidden: needs at least one layer"),
        ({"model": {"backbone": "lstm"}}, r"model\.backbone: unknown backbone 'lstm'"),
        ({"model": {"kernel": 4}}, r"model\.kernel: must be odd"),
        ({"train": {"sampling": "random"}}, r"train\.sampling"),
        ({"transfer": {"method": "tmu"}}, r"transfer\.sources: method 'tmu' needs at least one source"),
        ({"transfer": {"method": "tmu", "sources": ["a"], "layers": [3]}}, r"transfer\.layers: layer 3 does not exist"),
        ({"data": {"name": "nope"}}, r"data\.name: unknown dataset 'nope'"),
        ({"data": {"options": {"num_digitz": 2}}}, r"data\.options\.num_digitz: unknown key"),
        (
            {"transfer": {"method": "distill", "sources": ["a"], "distill_weight": 0.0}},
            r"transfer\.distill_weight: must be > 0 for method 'distill'",
        ),
        ({"transfer": {"memory_merge": "max"}}, r"transfer\.memory_merge: expected one of sum, mean, residual, got 'max'"),
        ({"model": {"norm": "layer"}}, r"model\.norm: expected one of none, group, release, got 'layer'"),
        ({"model": {"norm": "release", "backbone": "predrnn"}}, r"model\.norm: 'release' is the authors' ConvLSTM TMU"),
        ({"model": {"forget_bias": "one"}}, r"model\.forget_bias: expected a number"),
        ({"train": {"reverse_input": True, "time_reversal": True}}, r"train\.reverse_input: already trains on every batch"),
        ({"train": {"reverse_input": True, "cuda_graph": True}}, r"train\.cuda_graph: captures one optimiser step"),
        (
            {"train": {"reverse_input": True}, "transfer": {"method": "tmu", "sources": ["a"], "bank": "cached"}},
            r"train\.reverse_input: the cached memory bank holds forward-time sequences",
        ),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(raw)
    assert "\n" not in str(info.value)


def test_overrides_parse_toml_values():
    config = config_from_dict(
        tiny_raw(), ["train.lr=1e-2", "model.hidden=[4, 4]", "data.options.num_digits=3", "train.device=cpu"]
    )
    assert config.train.lr == 0.01
    assert config.model.hidden == [4, 4]
    assert config.data.options == {"num_digits": 3}
    assert config.train.device == "cpu"
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="train.lrate: unknown key"):
        config_from_dict(tiny_raw(), ["train.lrate=1"])


def test_round_trip_through_toml(tmp_path):
    config = config_from_dict(tiny_raw(), ["transfer.layers=[0]"])
    save_config(config, tmp_path / "c.toml")
    assert load_config(tmp_path / "c.toml") == config


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(["iterations", "lr", "grad_clip", "log_every", "sampling_stop"]),
    value=st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2)),
)
def test_property_wrong_types_always_rejected(key, value):
    with pytest.raises(ConfigError, match=rf"train\.{key}"):
        config_from_dict({"train": {key: value}})


@settings(max_examples=60, deadline=None)
@given(iterations=st.integers(-5, 5), lr=st.floats(-1, 1, allow_nan=False), stop=st.floats(-1, 2, allow_nan=False))
def test_property_values_accepted_iff_valid(iterations, lr, stop):
    valid = iterations > 0 and lr > 0 and 0 <= stop <= 1
    raw = {"train": {"iterations": iterations, "lr": lr, "sampling_stop": stop}}
    if valid:
        config_from_dict(raw)
    else:
        with pytest.raises(ConfigError, match=r"^train\."):
            config_from_dict(raw)


def test_retired_keys_load_from_stored_configs_only(tmp_path):
    raw = tiny_raw(train={"data_workers": 0})
    with pytest.raises(ConfigError, match="train.data_workers: unknown key"):
        config_from_dict(raw)
    assert config_from_dict(raw, stored=True) == config_from_dict(tiny_raw())


def test_seeds_out_of_range_are_refused_in_new_configs_and_load_from_stored_ones():
    raw = tiny_raw(data={"seed": 2**40})
    with pytest.raises(ConfigError, match=r"data.seed: must be in \[0, 4294967295\], got 1099511627776"):
        config_from_dict(raw)
    assert config_from_dict(raw, stored=True).data.seed == 2**40  # a run saved before the check


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "an empty config"),
        ("# only a comment\n", "an empty config"),
        ("[train]\niterations = 5\n", "no [data] and no [model] section"),
        ('[data]\nname = "moving_digits"\n', "no [model] section"),
    ],
)
def test_a_config_file_must_name_its_data_and_model(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(tmp_path / "c.toml")
    assert "[data] and [model]" in str(info.value) and "\n" not in str(info.value)
    # A stored configuration (transmem's own, every key written) and a dict still load.
    (tmp_path / "c.toml").write_text('[data]\nname = "moving_digits"\n[model]\nhidden = [8]\n')
    assert load_config(tmp_path / "c.toml").model.hidden == [8]
    assert config_from_dict({}) == RunConfig()


def test_every_shipped_config_loads():
    from transmem.benchmark.suites import SUITE_FILE, configs_root, load_suite

    files = sorted(configs_root().glob("*/*.toml"))
    assert len(files) >= 20
    for path in files:
        if path.name == SUITE_FILE:  # a suite, not a run config
            assert load_suite(path.parent.name).path == path
        else:
            load_config(path)
