"""MNIST with the tutorials' MLP: 784-128-128-10, ReLU, dropout 0.2, Adam 1e-3.

    python -m experiments.mnist_mlp [--workdir=checkpoints/mnist_mlp] [--config.epochs=20]

Needs the MNIST files: a prepared tfds data_dir, the four IDX .gz files in $JAXNN_DATA_DIR
(or --config.dataset.source_dir), or network access for the official download.
"""

from jaxnn.cli import main
from jaxnn.config import base_config


def get_config():
    config = base_config()
    config.name = "mnist_mlp"
    config.dataset.name = "mnist"
    config.model.name = "mlp"
    config.model.features = (128, 128)
    config.model.dropout_rate = 0.2
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.epochs = 10
    config.batch_size = 128
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/mnist_mlp")
