"""Regression on generated data with a known linear signal: 10 features, MSE loss, MAE metric.

python -m experiments.regression [--workdir=checkpoints/regression]
"""

from jaxnn.cli import main
from jaxnn.config import base_config


def get_config():
    config = base_config()
    config.name = "regression"
    config.dataset.name = "regression"
    config.dataset.num_features = 10
    config.dataset.num_examples = 2000
    config.dataset.noise = 0.1
    config.model.name = "mlp"
    config.model.features = (64, 64)
    config.loss = "mse"
    config.metrics = ("mae", "mse")
    config.monitor = "val_mae"
    config.monitor_mode = "min"
    config.optimizer.learning_rate = 1e-3
    config.epochs = 50
    config.batch_size = 32
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/regression")
