"""The tutorials' optimizer comparison: SGD, SGD + momentum 0.9, Nesterov, RMSprop, Adam and AdamW
train the same MLP on Fashion-MNIST from the same initial weights, each with the learning rate the
tutorials use for it (0.01 for the SGD family, 1e-3 for the adaptive ones).

    python -m experiments.optimizers [--workdir=checkpoints/optimizers] [--config.epochs=10]
    python -m experiments.optimizers --config.optimizers=sgd,adam   # a subset

Each optimizer is a full run in <workdir>/<optimizer>/ (resumable on its own); the comparison is
the table `jaxnn compare` prints, <workdir>/optimizers.png (every curve, the legend outside) and
<workdir>/summary.json.

Why not one vmapped sweep: a sweep stacks the members' optimizer states, so they must have the
same structure, and these six do not (SGD keeps none, momentum and Nesterov a trace each with
its own update rule, RMSprop and Adagrad one accumulator, Adam two moments, AdamW adds a decay
step). Each would be a group of its own, trained one after another, as here. What does stack is
one optimizer's numbers and the seeds, e.g. the spread of Adam over rates and seeds:

    jaxnn sweep fashion_mnist_mlp --sweep.optimizer.learning_rate="(1e-3,3e-4)" \\
        --sweep.seed="(0,1,2)"
"""

from pathlib import Path

import ml_collections

from jaxnn import report
from jaxnn.cli import main
from jaxnn.compare import compare as compare_runs
from jaxnn.config import base_config
from jaxnn.run import run

# name -> (optimizer config, learning rate): the rate the tutorials use for each.
OPTIMIZERS = {
    "sgd": ({"name": "sgd"}, 0.01),
    "momentum": ({"name": "momentum", "momentum": 0.9}, 0.01),
    "nesterov": ({"name": "nesterov", "momentum": 0.9}, 0.01),
    "rmsprop": ({"name": "rmsprop"}, 1e-3),
    "adam": ({"name": "adam"}, 1e-3),
    "adamw": ({"name": "adamw"}, 1e-3),
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
    """Runs every optimizer named in ``config.optimizers``, then prints the comparison table and
    draws every run's curves in one plot."""
    workdir = Path(workdir)
    names = [n.strip() for n in config.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"optimizers: unknown {unknown}; expected names from {list(OPTIMIZERS)}")
    results = {}
    for name in names:
        variant = _variant(config, name)
        print(
            f"=== {name}: {variant.optimizer.name}, learning rate {variant.optimizer.learning_rate}"
        )
        results[name] = run(variant, workdir / name, stop=stop)
    table, _ = compare_runs([workdir / name for name in names], workdir / "optimizers.png")
    print(table)
    summary = {
        name: {k: r.get(k) for k in ("test_accuracy", "best_val_metric", "wall_time_s")}
        for name, r in results.items()
    }
    report.dump_json(workdir / "summary.json", summary)
    return summary


if __name__ == "__main__":
    main(get_config, "checkpoints/optimizers", runner=compare)
