"""CIFAR-10 CNN with on-device augmentation: horizontal flips and random crops with padding 4.

python -m experiments.cifar10_cnn_augmented [--workdir=checkpoints/cifar10_cnn_augmented]
"""

from experiments import cifar10_cnn
from jaxnn.cli import main


def get_config():
    config = cifar10_cnn.get_config()
    config.name = "cifar10_cnn_augmented"
    config.augment.hflip = True
    config.augment.crop_padding = 4
    return config


if __name__ == "__main__":
    main(get_config, "checkpoints/cifar10_cnn_augmented")
