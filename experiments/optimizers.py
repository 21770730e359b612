"""The tutorials' optimizer comparison: SGD, SGD + momentum 0.9, RMSprop, Adagrad and Adam training
the same MLP on Fashion-MNIST from the same initial weights, with the curves in one plot.

    python -m experiments.optimizers [--workdir=checkpoints/optimizers] [--config.epochs=10]

Each optimizer is a full run in <workdir>/<optimizer>/ (resumable on its own); the comparison is
<workdir>/optimizers.png and <workdir>/summary.json.
"""

from pathlib import Path

import ml_collections

from jaxnn import report
from jaxnn.cli import main
from jaxnn.config import base_config
from jaxnn.run import run

# name -> (optimizer config, learning rate): each optimizer's usual default rate.
OPTIMIZERS = {
    "sgd": ({"name": "sgd"}, 0.01),
    "momentum": ({"name": "momentum", "momentum": 0.9}, 0.01),
    "rmsprop": ({"name": "rmsprop"}, 1e-3),
    "adagrad": ({"name": "adagrad"}, 0.01),
    "adam": ({"name": "adam"}, 1e-3),
}


def get_config():
    config = base_config()
    config.name = "optimizers"
    config.dataset.name = "fashion_mnist"
    config.model.name = "mlp"
    config.model.features = (128, 128)
    config.epochs = 10
    config.batch_size = 128
    config.optimizers = ",".join(OPTIMIZERS)  # which of them to run, comma-separated
    return config


def _variant(config, name: str) -> ml_collections.ConfigDict:
    """One optimizer's run config: the comparison's, without its list of optimizers."""
    options = config.to_dict()
    del options["optimizers"]
    variant = ml_collections.ConfigDict(options)
    optimizer, learning_rate = OPTIMIZERS[name]
    variant.optimizer.update(optimizer)
    variant.optimizer.learning_rate = learning_rate
    variant.name = f"optimizers/{name}"
    return variant


def compare(config, workdir, *, stop=None) -> dict:
    """Runs every optimizer named in ``config.optimizers`` and plots their curves together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workdir = Path(workdir)
    names = [n.strip() for n in config.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"optimizers: unknown {unknown}; expected names from {list(OPTIMIZERS)}")
    results = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        results[name] = run(_variant(config, name), workdir / name, stop=stop)
        history = results[name]["history"]
        for ax, key in zip(axes, ("val_loss", "val_accuracy"), strict=True):
            key = key if key in history else key.removeprefix("val_")
            ax.plot(range(1, len(history[key]) + 1), history[key], "o-", label=name)
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Optimizers on the same model and data")
    fig.savefig(workdir / "optimizers.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    summary = {
        name: {k: r.get(k) for k in ("test_accuracy", "best_val_metric", "wall_time_s")}
        for name, r in results.items()
    }
    report.dump_json(workdir / "summary.json", summary)
    for name, values in summary.items():
        print(f"{name:>9}: test_accuracy={values['test_accuracy']:.4f}")
    return summary


if __name__ == "__main__":
    main(get_config, "checkpoints/optimizers", runner=compare)
