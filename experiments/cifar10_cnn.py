"""CIFAR-10 with the tutorials' CNN: Conv32-BN-Pool-Conv64-BN-Pool-Flatten-Dropout(0.4)-Dense128-
Dense10, Adam 1e-3, 20 epochs, batch 64.

    python -m experiments.cifar10_cnn [--workdir=checkpoints/cifar10_cnn]

The augmented variant (random flips and pad-4 crops) is experiments.cifar10_cnn_augmented.
Needs cifar-10-python.tar.gz (or cifar-10-binary.tar.gz) in $JAXNN_DATA_DIR, a prepared tfds
data_dir, or network access.
"""

from jaxnn.cli import main
from jaxnn.config import base_config


def get_config():
    config = base_config()
    config.name = "cifar10_cnn"
    config.dataset.name = "cifar10"
    config.model.name = "cnn"
    config.model.filters = (32, 64)
    config.model.dense = (128,)
    config.model.batch_norm = True
    config.model.dropout_rate = 0.4
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.epochs = 20
    config.batch_size = 64
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/cifar10_cnn")
