"""The config's checks of label_smoothing and model.test_time_hflip, refused before anything
compiles, and what they build (``build_loss``, ``build_model``), also for configs saved before the
keys existed."""

import json

import pytest
from ml_collections import ConfigDict

from experiments import binary, fashion_mnist_cnn, regression
from jaxnn import config as config_lib
from jaxnn import losses
from jaxnn import workdir as workdir_lib


def test_label_smoothing_defaults_to_the_registry_loss_and_builds_the_smoothed_one():
    config = config_lib.base_config()
    assert config.label_smoothing == 0.0
    config_lib.check(config)
    assert config_lib.build_loss(config) is losses.get("sparse_categorical_crossentropy")
    config.label_smoothing = 0.1
    config_lib.check(config)
    loss = config_lib.build_loss(config)
    assert (loss.name, loss.label_smoothing) == ("sparse_categorical_crossentropy", 0.1)
    # A config.json written before the key existed trained without smoothing.
    saved = json.loads(config_lib.base_config().to_json())
    del saved["label_smoothing"]
    assert config_lib.build_loss(saved) is losses.get("sparse_categorical_crossentropy")


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), float("inf")])
def test_label_smoothing_out_of_range_is_refused(value):
    config = config_lib.base_config()
    config.label_smoothing = value
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a real number in \[0, 1\)"):
        config_lib.check(config)


def test_label_smoothing_for_a_regression_loss_is_refused():
    config = regression.get_config()
    config_lib.check(config)
    config.label_smoothing = 0.1
    with pytest.raises(
        ValueError, match=r"^label_smoothing: expected 0 for the regression loss 'mse'.*got 0\.1$"
    ):
        config_lib.check(config)


def test_a_saved_config_without_label_smoothing_matches_the_default():
    saved = json.loads(config_lib.base_config().to_json())
    del saved["label_smoothing"]
    upgraded = workdir_lib._upgraded(saved)
    assert upgraded["label_smoothing"] == 0.0
    now = json.loads(config_lib.base_config().to_json())
    assert workdir_lib.config_differences(upgraded, now) == []
    now["label_smoothing"] = 0.1
    assert workdir_lib.config_differences(upgraded, now) == [
        "label_smoothing: started with 0.0, now 0.1"
    ]


def test_test_time_hflip_builds_the_cnn_with_it_and_older_configs_without_it():
    config = fashion_mnist_cnn.get_config()
    assert config.model.test_time_hflip is False
    config.model.test_time_hflip = True
    config_lib.check(config)
    assert config_lib.build_model(config.model, 10).test_time_hflip is True
    saved = json.loads(fashion_mnist_cnn.get_config().to_json())
    del saved["model"]["test_time_hflip"]
    assert config_lib.build_model(ConfigDict(saved["model"]), 10).test_time_hflip is False
    upgraded = workdir_lib._upgraded(saved)
    now = json.loads(fashion_mnist_cnn.get_config().to_json())
    assert workdir_lib.config_differences(upgraded, now) == []


@pytest.mark.parametrize(
    "get_config, given",
    [
        (regression.get_config, "model.name='mlp', a regression loss); got True"),
        (binary.get_config, "model.name='mlp', a binary loss); got True"),
    ],
)
def test_test_time_hflip_outside_a_softmax_cnn_is_refused(get_config, given):
    config = get_config()
    config.model.test_time_hflip = True
    with pytest.raises(ValueError, match=r"^model\.test_time_hflip: expected True or False") as e:
        config_lib.check(config)
    assert str(e.value).endswith(given)
