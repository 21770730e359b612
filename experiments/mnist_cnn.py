"""MNIST with the classic CNN:
Conv32-BN-ReLU-Pool-Conv64-BN-ReLU-Pool-Flatten-Dropout(0.4)-Dense128-Dense10.

python -m experiments.mnist_cnn [--workdir=checkpoints/mnist_cnn] [--config.epochs=10]
"""

from jaxnn.cli import main
from jaxnn.config import base_config


def get_config():
    config = base_config()
    config.name = "mnist_cnn"
    config.dataset.name = "mnist"
    config.model.name = "cnn"
    config.model.filters = (32, 64)
    config.model.dense = (128,)
    config.model.batch_norm = True
    config.model.dropout_rate = 0.4
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.epochs = 6
    config.batch_size = 128
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/mnist_cnn")
