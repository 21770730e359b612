"""Binary classification on generated data with a known signal: 20 features, a sigmoid output
trained with binary cross-entropy (from logits, which is the stable form of sigmoid + BCE).

    python -m experiments.binary [--workdir=checkpoints/binary]
"""

from jaxnn.cli import main
from jaxnn.config import base_config


def get_config():
    config = base_config()
    config.name = "binary"
    config.dataset.name = "binary"
    config.dataset.num_features = 20
    config.dataset.num_examples = 2000
    config.model.name = "mlp"
    config.model.features = (64, 32)
    config.model.dropout_rate = 0.2
    config.loss = "binary_crossentropy"
    config.metrics = ("binary_accuracy",)
    config.monitor = "val_binary_accuracy"
    config.monitor_mode = "max"
    config.optimizer.learning_rate = 1e-3
    config.epochs = 30
    config.batch_size = 32
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/binary")
