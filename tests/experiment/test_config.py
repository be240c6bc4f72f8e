"""RunConfig: validation messages name the bad value and the valid ones; dict round trip; image size."""
from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest
import torch

from varprobe.experiment import RunConfig
from varprobe.experiment.config import DATASETS, MODELS, QUANTITY_PRESETS, check_config
from varprobe.layers import SCHEMES


@pytest.mark.parametrize("field, bad, valid", [
    ("model", "resnet21", MODELS),
    ("scheme", "foo", SCHEMES),
    ("data", "mnist", DATASETS),
    ("quantities", "some", QUANTITY_PRESETS),
    ("gamma_mode", "scaled", ("raw", "equiv")),
])
def test_unknown_choice_names_value_and_lists_valid(field, bad, valid):
    with pytest.raises(ValueError) as info:
        RunConfig(**{field: bad})
    message = str(info.value)
    assert repr(bad) in message and field in message
    for v in valid:
        assert re.search(rf"\b{re.escape(v)}\b", message), (v, message)


@pytest.mark.parametrize("field", ["batch_size", "steps", "every", "flush_every", "eval_batch"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_counts_must_be_positive_integers(field, bad):
    with pytest.raises(ValueError, match=rf"{field} must be a positive integer, got {re.escape(repr(bad))}"):
        RunConfig(**{field: bad})


@pytest.mark.parametrize("kwargs, pattern", [
    ({"lr": 0.0}, r"lr must be > 0, got 0\.0"),
    ({"lr": -0.1}, r"lr must be > 0, got -0\.1"),
    ({"lr": float("nan")}, r"lr must be > 0, got nan"),
    ({"gamma": -1e-3}, r"gamma must be >= 0, got -0\.001"),
    ({"gamma": 0.1, "scheme": "bn"}, r"gamma applies to scheme 'pws' only, got scheme 'bn'"),
    ({"data": "digits", "size": 12}, r"digits size must be 8, 16 or 32, got 12"),
    ({"data": "cifar10", "size": 16}, r"cifar10 size must be 32, got 16"),
    ({"channels": 2}, r"channels must be 1, 3 or None, got 2"),
    ({"channels": 1.0}, r"channels must be 1, 3 or None, got 1\.0"),
    ({"channels": True}, r"channels must be 1, 3 or None, got True"),
    ({"data": "cifar10", "channels": 1}, r"cifar10 channels must be 3, got 1"),
    ({"lr": 1e300}, r"lr must be at most 3\.403e\+38 \(the largest float32.*got 1e\+300"),
    ({"weight_decay": 1e39}, r"weight_decay must be at most 3\.403e\+38 .*got 1e\+39"),
    # issue 22: an lr that underflows on float32 weights, a thread count beyond a C int, a step given twice
    ({"lr": 1e-320}, r"lr must be at least 1\.175e-38 \(the smallest normal float32.*got 1e-320"),
    ({"threads": 99999999999}, r"threads must be a positive integer up to 1024, got 99999999999"),
    ({"threads": 0}, r"threads must be a positive integer up to 1024, got 0"),
    ({"lr_milestones": (1, 1)}, r"lr_milestones must be a sequence of distinct non-negative integers.*got \(1, 1\)"),
    ({"eval_steps": [0, 0]}, r"eval_steps must be a sequence of distinct non-negative integers.*got \[0, 0\]"),
])
def test_value_errors_name_the_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        RunConfig(**kwargs)


@pytest.mark.parametrize("field", ["freeze_alpha", "init_alpha", "project_shift"])
@pytest.mark.parametrize("bad", [None, "yes", 1])
def test_flags_must_be_bools(field, bad):
    with pytest.raises(ValueError, match=rf"{field} must be True or False, got {re.escape(repr(bad))}"):
        RunConfig(**{field: bad})


def test_gamma_zero_is_allowed_for_pws():
    assert RunConfig(scheme="pws", gamma=0.0).gamma == 0.0


def test_replace_validates():
    with pytest.raises(ValueError, match="unknown scheme 'nope'"):
        RunConfig().replace(scheme="nope")
    assert RunConfig().replace(lr=0.2, seed=3) == RunConfig(lr=0.2, seed=3)


def _full_config() -> RunConfig:
    return RunConfig(model="resnet8", scheme="pws", data="synthetic", size=12, channels=1, width=4, lr=0.2,
                     batch_size=16,
                     steps=7, seed=3, momentum=0.5, weight_decay=0.0, lr_milestones=[3, 5], gamma=0.0,
                     gamma_mode="equiv", freeze_alpha=True, init_alpha=True, project_shift=True, every=2,
                     flush_every=5, quantities="forward",
                     eval_steps=[0, 6], eval_batch=32, collapse_var=10.0, threads=1, device="cpu",
                     data_limit=100, synthetic_n=200)


def test_every_field_differs_from_default_in_the_full_config():
    """So that the round trip below exercises every field (scheme must stay pws: gamma is set)."""
    full, default = _full_config(), RunConfig()
    same = [f.name for f in fields(RunConfig) if getattr(full, f.name) == getattr(default, f.name)]
    assert same == ["scheme"]


def test_to_dict_from_dict_round_trip():
    config = _full_config()
    d = config.to_dict()
    assert set(d) == {f.name for f in fields(RunConfig)}
    assert d["lr_milestones"] == [3, 5] and d["eval_steps"] == [0, 6]  # lists: JSON-friendly
    assert RunConfig.from_dict(d) == config
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == config  # through meta.json
    assert RunConfig.from_dict({**d, "unknown_key": 1}) == config  # extra keys are ignored
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_sequences_become_tuples_and_config_is_hashable():
    config = RunConfig(eval_steps=[2, 0], lr_milestones=[10])
    assert config.eval_steps == (2, 0) and config.lr_milestones == (10,)
    assert hash(config) == hash(RunConfig(eval_steps=(2, 0), lr_milestones=(10,)))


@pytest.mark.parametrize("kwargs, size", [
    ({}, 8),                                          # digits + simple_cnn
    ({"data": "digits", "model": "resnet8"}, 16),
    ({"data": "digits", "model": "vgg"}, 16),
    ({"data": "synthetic"}, 16),
    ({"data": "synthetic", "model": "resnet20"}, 16),
    ({"data": "cifar10"}, 32),
    ({"data": "digits", "size": 32}, 32),             # an explicit size wins
    ({"data": "synthetic", "size": 24}, 24),
])
def test_image_size_defaults(kwargs, size):
    assert RunConfig(**kwargs).image_size == size


@pytest.mark.parametrize("kwargs, channels", [
    ({}, 1), ({"data": "digits", "model": "resnet20"}, 1), ({"data": "synthetic"}, 3), ({"data": "cifar10"}, 3),
    ({"data": "digits", "channels": 3}, 3), ({"data": "synthetic", "channels": 1}, 1),
])
def test_image_channels_defaults(kwargs, channels):
    assert RunConfig(**kwargs).image_channels == channels


@pytest.mark.parametrize("kwargs, fragments", [
    ({"data_limit": 5, "batch_size": 64}, ["batch_size 64", "5 images of data 'digits' with data_limit 5",
                                           "valid: batch_size <= 5, or a larger data_limit"]),
    ({"scheme": "gn", "width": 3}, ["model 'simple_cnn' with scheme 'gn' and width 3 cannot be built",
                                    "divisible", "widths that build: 8, 16, 24"]),
    ({"model": "vgg", "size": 8, "width": 4}, ["model 'vgg' with scheme 'pws' and width 4 cannot take 8x8 images",
                                               "Kernel size", "sizes that work for data 'digits': 16, 32"]),
    ({"data": "synthetic", "synthetic_n": 64}, ["batch_size 64", "54 images of data 'synthetic'",
                                                "or a larger synthetic_n"]),
    ({"data": "synthetic", "size": 2, "synthetic_n": 200}, ["the default width cannot take 2x2 images",
                                                            "sizes that work for data 'synthetic': 4, 8"]),
])
def test_check_config_names_the_fields_and_what_would_work(kwargs, fragments):
    """Built once on a dummy batch: what RunConfig alone cannot know is refused before a run starts."""
    with pytest.raises(ValueError) as info:
        check_config(RunConfig(**kwargs))
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_check_config_accepts_a_good_config_and_leaves_the_rng_alone():
    state = torch.get_rng_state()
    for config in (RunConfig(), RunConfig(model="resnet8", scheme="gn", width=8, size=8),
                   RunConfig(scheme="bn", batch_size=1)):
        check_config(config)
    assert torch.equal(torch.get_rng_state(), state)
