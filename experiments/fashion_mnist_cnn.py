"""The main job: Fashion-MNIST with the classic CNN (Conv32-BN-ReLU-Pool-Conv64-BN-ReLU-Pool-
Flatten-Dropout(0.4)-Dense128-Dense10), Adam 1e-3 with a cosine decay.

    python -m experiments.fashion_mnist_cnn [--workdir=checkpoints/fashion_mnist_cnn]

With Debian's dataset-fashion-mnist package installed the data is found without a download.
"""

from jaxnn.cli import main
from jaxnn.config import base_config


def get_config():
    config = base_config()
    config.name = "fashion_mnist_cnn"
    config.dataset.name = "fashion_mnist"
    config.model.name = "cnn"
    config.model.filters = (32, 64)
    config.model.dense = (128,)
    config.model.batch_norm = True
    config.model.dropout_rate = 0.4
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule.name = "cosine"
    config.epochs = 10
    config.batch_size = 128
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/fashion_mnist_cnn")
