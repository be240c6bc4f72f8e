"""RunConfig's model and data choices: resnet34, the standard profile's 16 px 3-channel digits, and
defaults that leave existing configs' data and models bit-identical."""
from __future__ import annotations

import torch

from varprobe.data import digits, synthetic
from varprobe.experiment.config import RunConfig, build_model, load_data
from varprobe.models import resnet34_cifar, resnet_cifar


def _data(config: RunConfig):
    return load_data(config.data, config.image_size, config.seed, config.data_limit, config.synthetic_n,
                     config.image_channels)


def test_default_configs_get_the_data_they_had():
    """channels=None: digits stay 1-channel and synthetic 3-channel, tensor for tensor."""
    for config, reference in ((RunConfig(), digits(8, 1, 0)), (RunConfig(model="resnet8"), digits(16, 1, 0)),
                              (RunConfig(data="synthetic", synthetic_n=100),
                               synthetic(100, 16, 3, 10, 0))):
        split = _data(config)
        assert torch.equal(split.x_train, reference.x_train) and torch.equal(split.x_test, reference.x_test)
        assert torch.equal(split.y_train, reference.y_train)


def test_standard_profile_data_is_16px_three_channel_digits():
    config = RunConfig(model="resnet20", data="digits", size=16, channels=3, seed=2)
    split = _data(config)
    reference = digits(16, 3, 2)
    assert split.x_train.shape == (1437, 3, 16, 16)
    assert torch.equal(split.x_train, reference.x_train) and torch.equal(split.y_test, reference.y_test)
    model = build_model(config, split.in_channels, split.num_classes)
    assert model.stem[0].conv.in_channels == 3
    assert model(split.x_train[:2]).shape == (2, 10)


def test_resnet34_is_a_model_choice():
    config = RunConfig(model="resnet34", scheme="bn", data="synthetic", size=8, width=8, synthetic_n=100)
    split = _data(config)
    torch.manual_seed(0)
    model = build_model(config, split.in_channels, split.num_classes)
    torch.manual_seed(0)
    reference = resnet34_cifar("bn", 10, width=8)
    assert [len(s) for s in model.stages] == [3, 4, 6, 3]
    assert model.state_dict().keys() == reference.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k


def test_resnet20_bn_from_config_has_the_official_bn_layout():
    config = RunConfig(model="resnet20", scheme="bn")
    model = build_model(config, 1, 10)
    assert isinstance(model.neck[0], torch.nn.Identity)
    assert type(model) is type(resnet_cifar(20, "bn"))
    assert all(torch.equal(s.branch[2].norm.weight.detach(), torch.zeros_like(s.branch[2].norm.weight))
               for stage in model.stages for s in stage)
