"""Property-based tests of the config parser: any input gives a config or a one-line
ConfigError, extreme numbers are refused, valid configs round-trip through TOML and
overrides (the data loaders' validation has its own in tests/test_data.py).
"""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import tiny_raw
from transmem.config import MAX_SEED, ConfigError, RunConfig, config_from_dict, load_config

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib


SECTIONS = {
    section: [f.name for f in dataclasses.fields(type(getattr(RunConfig(), section)))]
    for section in ("data", "model", "train", "eval", "transfer")
}
KNOWN_KEYS = [f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys]

# Finite floats and 64-bit integers here; NaN, inf and huge integers have their own test.
toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["none", "cosine", "standard", "reverse", "group", "cpu", "auto", "tmu", "finetune", "moving_digits"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _literal(value) -> str:
    """``value`` written as the TOML literal after ``v =``."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


value_texts = st.one_of(
    st.text(max_size=12),
    toml_values.map(lambda v: "{}" if isinstance(v, dict) else _literal(v)),
    st.sampled_from(["[]", "[8, 8]", "[0]", "1e-3", "-0.0", "true", '"x"', "{a = 1}", "1979-05-27", "0x10", "[[1]]", "[1, 'a']"]),
)
key_texts = st.one_of(
    st.sampled_from(KNOWN_KEYS + ["data.options.num_digits", "train", "train.lr.x", "x.y", "data.options"]), st.text(max_size=12)
)


def _has_newline(value) -> bool:
    if isinstance(value, dict):
        return any(_has_newline(k) or _has_newline(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_newline(v) for v in value)
    return isinstance(value, str) and any(c in value for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def accepted_or_config_error(raw: dict, overrides: list[str]) -> RunConfig | None:
    """The config, or None for a ConfigError with a one-line message (unless the input
    itself holds a line break, which the message may quote); anything else fails."""
    try:
        return config_from_dict(raw, overrides)
    except ConfigError as error:
        message = str(error)
        assert message.strip(), repr(message)
        assert len(message.splitlines()) == 1 or _has_newline([raw, overrides]), repr(message)
        return None


def assert_round_trips(config: RunConfig) -> None:
    text = config.to_toml()
    again = config_from_dict(tomllib.loads(text))
    assert again == config
    assert again.to_toml() == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.tuples(key_texts, value_texts).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=16)), max_size=3)
)
def test_property_any_override_strings_give_a_config_or_a_config_error(overrides):
    config = accepted_or_config_error(tiny_raw(), overrides)
    if config is not None:
        assert_round_trips(config)


section_tables = st.dictionaries(
    st.sampled_from([*SECTIONS, "trian", "options"]),
    st.dictionaries(st.sampled_from(sorted({k.split(".")[-1] for k in KNOWN_KEYS} | {"lrr"})), toml_values, max_size=4),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section_tables)
def test_property_any_nested_tables_give_a_config_or_a_config_error(tables):
    raw = tiny_raw()
    for section, values in tables.items():
        if isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    config = accepted_or_config_error(raw, [])
    if config is not None:
        assert_round_trips(config)


HINTS = {s: typing.get_type_hints(type(getattr(RunConfig(), s))) for s in SECTIONS}
NUMERIC_KEYS = sorted(f"{s}.{k}" for s, hints in HINTS.items() for k, t in hints.items() if t in (int, float))
EXTREMES = ["nan", "inf", "-inf", "+inf", "1e400", str(2**63), str(-(2**63) - 1), "9" * 400, "9" * 5000]


@settings(max_examples=120, deadline=None)
@given(key=st.sampled_from(NUMERIC_KEYS), literal=st.sampled_from(EXTREMES), via_file=st.booleans())
def test_property_non_finite_and_out_of_range_numbers_are_refused(tmp_path_factory, key, literal, via_file):
    section, name = key.split(".")
    if via_file:
        path = tmp_path_factory.mktemp("x") / "c.toml"
        text = tomli_w.dumps({k: v for k, v in tiny_raw().items() if k != section})
        text += f"\n[{section}]\n" + "".join(
            f"{k} = {_literal(v)}\n" for k, v in tiny_raw().get(section, {}).items() if k not in (name, "options")
        )
        text += f"{name} = {literal}\n"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
    else:
        with pytest.raises(ConfigError) as info:
            config_from_dict(tiny_raw(), [f"{key}={literal}"])
    assert key in str(info.value) or "not valid TOML" in str(info.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.hidden=[8, true]", "model.hidden"),
        ("model.hidden=[99999999999999999999]", "model.hidden"),
        ("transfer.layers=[false]", "transfer.layers"),
        ("transfer.sources=[1]", "transfer.sources"),
        ('transfer.sources=[""]', "transfer.sources"),
    ],
)
def test_wrong_list_elements_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}"):
        config_from_dict(tiny_raw(), [override])


valid_changes = st.fixed_dictionaries(
    {},
    optional={
        "data": st.fixed_dictionaries(
            {},
            optional={
                "frame_size": st.sampled_from([8, 16, 32, 64]),
                "input_len": st.integers(1, 5),
                "batch_size": st.integers(1, 64),
                "seed": st.integers(0, MAX_SEED),
                "options": st.fixed_dictionaries({}, optional={"num_digits": st.integers(1, 3)}),
            },
        ),
        "model": st.fixed_dictionaries(
            {},
            optional={
                "backbone": st.sampled_from(["convlstm", "predrnn", "predrnn_v2"]),
                "hidden": st.lists(st.integers(1, 64), min_size=1, max_size=4),
                "kernel": st.sampled_from([1, 3, 5]),
                "patch": st.sampled_from([1, 2, 4, 8]),
                "norm": st.sampled_from(["none", "group"]),
                "decouple_weight": st.floats(0, 10),
            },
        ),
        "train": st.fixed_dictionaries(
            {},
            optional={
                "iterations": st.integers(1, 10**9),
                "lr": st.floats(1e-9, 10),
                "lr_schedule": st.sampled_from(["none", "cosine", "step"]),
                "sampling": st.sampled_from(["standard", "none"]),
                "sampling_stop": st.floats(0, 1),
                "grad_clip": st.floats(0, 1e6),
                "device": st.sampled_from(["auto", "cpu", "cuda:1"]),
                "deterministic": st.booleans(),
            },
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=valid_changes)
def test_property_valid_configs_round_trip_through_toml_and_overrides(tmp_path, changes):
    raw = tiny_raw(**changes)
    raw["data"]["total_len"] = raw["data"]["input_len"] + 3
    config = config_from_dict(raw)
    assert_round_trips(config)
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    # The same values given as --set overrides (TOML literals) build the same config.
    overrides = [f"{s}.{k}={_literal(v)}" for s, values in changes.items() for k, v in values.items() if k != "options"]
    if "options" in changes.get("data", {}):  # a whole table replaces the options, as in the file
        overrides.append("data.options={" + ", ".join(f"{k} = {v}" for k, v in changes["data"]["options"].items()) + "}")
    base = tiny_raw()
    base["data"]["total_len"] = raw["data"]["total_len"]
    assert config_from_dict(base, overrides) == config
