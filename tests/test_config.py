"""Config and live-control validation: every bad value is refused with one clear line."""

import math

import pytest

from engine.config import Config, ConfigError, validate_control


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("lr", 0.0, "learning rate"),
        ("lr", -1e-3, "learning rate"),
        ("lr", math.inf, "learning rate"),
        ("lr", math.nan, "learning rate"),
        ("lr", "fast", "not a number"),
        ("reg", -1.0, "λ"),
        ("reg", math.nan, "λ"),
        ("batch_size", 0, "batch size"),
        ("batch_size", 2.5, "batch size"),
        ("batch_size", 5000, "larger than the training set"),
        ("loss", "hinge", "loss must be one of svm, softmax"),
        ("optimizer", "adam", "optimizer must be one of"),
        ("on_diverge", "panic", "on_diverge must be one of"),
    ],
)
def test_bad_values_are_refused_with_one_line(name, value, match):
    with pytest.raises(ConfigError, match=match) as e:
        validate_control(name, value, num_train=1000)
    assert "\n" not in str(e.value)


def test_typed_strings_become_numbers():
    assert validate_control("lr", " 1e-3 ") == 1e-3
    assert validate_control("reg", "2.5e4") == 25000.0
    assert validate_control("batch_size", "256", num_train=1000) == 256


def test_round_trip_through_dict_ignores_unknown_keys():
    c = Config(loss="svm", lr=1e-7, reg=2.5e4, batch_size=128, seed=3)
    d = c.to_dict() | {"from_the_future": 1}
    assert Config.from_dict(d) == c


def test_resolved_fills_defaults_from_the_dataset(tiny):
    c = Config(data=tiny.spec).resolved(tiny)
    assert c.lr is not None and c.lr > 0 and c.reg is not None and c.init_scale is not None
    svm = Config(data=tiny.spec, loss="svm").resolved(tiny)
    assert svm.lr > 0
    with pytest.raises(ConfigError, match="larger than the training set"):
        Config(data=tiny.spec, batch_size=tiny.num_train + 1).resolved(tiny)
