"""Trains a small MLP (dropout) and CNN (BatchNorm) with the Trainer and writes the results.

Run as a subprocess by tests/test_sharding.py, with the device count set by XLA_FLAGS and, for a
multi-process run, JAXNN_COORDINATOR_ADDRESS / JAXNN_NUM_PROCESSES / JAXNN_PROCESS_ID:

    python tests/distributed_worker.py OUT_DIR [--checkpoint]

Each process passes only its own rows (jaxnn.sharding.process_rows); process 0 writes
``OUT_DIR/result.npz`` (every parameter, the histories, the test metrics and predictions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxnn import sharding  # noqa: E402

sharding.initialize_distributed(timeout_s=60)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxnn  # noqa: E402


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def dataset(n: int, shape: tuple[int, ...], seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    x[np.arange(n), ..., 0] += y[:, None, None] if len(shape) == 3 else 0  # a learnable signal
    if len(shape) == 1:
        x[np.arange(n), y] += 2.0
    return x, y.astype(np.int32)


# name -> (model, example shape); the same optimizer and seed for both.
MODELS = {
    "mlp": (jaxnn.MLP(features=(32, 32), num_outputs=4, dropout_rate=0.2), (12,)),
    "cnn": (
        jaxnn.CNN(filters=(4, 8), dense=(16,), num_outputs=4, batch_norm=True, dropout_rate=0.1),
        (8, 8, 1),
    ),
}
OPTIMIZER = {"name": "adam", "learning_rate": 3e-3}
SEED = 3


def train(name: str, mesh, out: Path, checkpoint: bool) -> dict[str, np.ndarray]:
    model, shape = MODELS[name]
    # 300 training examples in batches of 64: the last batch is partial (padded and masked),
    # and 300 rows do not split evenly over 8 devices (the global array is padded).
    x, y = dataset(300, shape, seed=1)
    x_val, y_val = dataset(70, shape, seed=2)
    rows, val_rows = sharding.process_rows(300, mesh), sharding.process_rows(70, mesh)
    trainer = jaxnn.Trainer(model, optimizer=OPTIMIZER, seed=SEED)
    history = trainer.fit(
        x[rows],
        y[rows],
        epochs=2,
        batch_size=64,
        validation_data=(x_val[val_rows], y_val[val_rows]),
        verbose=0,
    )
    test = trainer.evaluate(x_val[val_rows], y_val[val_rows], batch_size=32)
    predictions = trainer.predict(x_val)  # the same x on every process
    result = {f"{name}/{k}": v for k, v in flat(trainer.state.variables).items()}
    result.update(
        {f"{name}/history/{k}": np.asarray(v) for k, v in history.items() if "time" not in k}
    )
    result.update({f"{name}/test/{k}": np.asarray(v) for k, v in test.items()})
    result[f"{name}/predictions"] = predictions
    if checkpoint:
        from jaxnn.checkpoint import Checkpointer

        with Checkpointer(out / name) as checkpointer:
            checkpointer.save(
                trainer.global_step, trainer.state, extra={"processes": jax.process_count()}
            )
    return result


def main() -> None:
    out = Path(sys.argv[1])
    checkpoint = "--checkpoint" in sys.argv
    mesh = sharding.make_mesh()
    result = {}
    for name in MODELS:
        result.update(train(name, mesh, out, checkpoint))
    if jax.process_index() == 0:
        np.savez(out / "result.npz", **result)
        info = {"devices": jax.device_count(), "processes": jax.process_count()}
        (out / "info.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
