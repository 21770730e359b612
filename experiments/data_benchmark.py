"""Throughput of the input pipeline against training, measured side by side in one run.

    python -m experiments.data_benchmark [--examples=60000] [--cnn-examples=6400]

Measures, in examples/s on 28×28×1 float32 data resident on the device:
  * batching: the Trainer's way, a per-epoch (host) permutation and on-device gathers of batch-128
    chunks (32 batches per dispatch, ``jaxnn.step.gather_rows`` as in the train step);
  * batching + augmentation: the same plus ``jaxnn.data.augment`` with random flips, pad-4 crops,
    ±10 % translations and ±10° rotations, per example;
  * MLP and CNN training (the benchmark workloads, ``Trainer.fit``), steady-state epochs.
Targets: batching ≥ 10× the MLP's training throughput; batching + augmentation ≥ 3× the CNN's.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmark.common import BATCH_SIZE, LEARNING_RATE, median_call_seconds

PER_DISPATCH = 32
AUGMENT = {
    "hflip": True,
    "crop_padding": 4,
    "width_shift": 0.1,
    "height_shift": 0.1,
    "rotation": 10.0,
}


def pipeline_rates(x: jax.Array, augment_options: dict | None) -> float:
    """Examples/s of permuting and gathering (and augmenting) one epoch on device."""
    from jaxnn.data import augment
    from jaxnn.step import gather_rows

    n = x.shape[0]
    steps = n // BATCH_SIZE
    per_dispatch = min(PER_DISPATCH, steps)

    @jax.jit
    def chunk(key, x, idx):
        def one(total, item):
            i, batch_idx = item
            batch = gather_rows(x, batch_idx)
            if augment_options:
                batch = augment(jax.random.fold_in(key, i), batch, **augment_options)
            return total + batch.sum(), None  # consume the batch: nothing is optimised away

        items = (jnp.arange(idx.shape[0]), idx)
        return jax.lax.scan(one, jnp.zeros((), x.dtype), items)[0]

    def run_epoch(counter=[0]):  # noqa: B006 - a per-call counter for fresh keys
        counter[0] += 1
        key = jax.random.key(counter[0])
        # As the Trainer does: a host permutation per epoch, copied to the device once.
        order = np.random.default_rng(counter[0]).permutation(n)[: steps * BATCH_SIZE]
        order = jax.device_put(order.reshape(steps, BATCH_SIZE).astype(np.int32))
        total = 0.0
        for start in range(0, steps - per_dispatch + 1, per_dispatch):
            total = total + chunk(key, x, order[start : start + per_dispatch])
        jax.block_until_ready(total)

    used = (steps // per_dispatch) * per_dispatch * BATCH_SIZE
    return used / median_call_seconds(run_epoch)  # after a warm-up epoch that compiles


def training_rate(model, x: np.ndarray, y: np.ndarray) -> float:
    """Steady-state training examples/s of Trainer.fit (the second of two epochs)."""
    import optax

    from jaxnn import Trainer

    trainer = Trainer(model, optimizer=optax.adam(LEARNING_RATE), seed=0)
    history = trainer.fit(x, y, epochs=2, batch_size=BATCH_SIZE, verbose=0)
    return len(x) / history["train_time_s"][-1]


def main() -> None:
    """Measures and prints the four throughputs and the two ratios against their targets."""
    from experiments.benchmark.jaxnn_peer import jaxnn_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--cnn-examples", type=int, default=6400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.examples)
    x_device = jnp.asarray(x)
    batching = pipeline_rates(x_device, None)
    augmented = pipeline_rates(x_device, AUGMENT)
    mlp = training_rate(jaxnn_model("mlp"), x, y)
    cnn = training_rate(jaxnn_model("cnn"), x[: args.cnn_examples], y[: args.cnn_examples])
    print(f"devices: {jax.devices()}")
    print(f"batching:                {batching:12,.0f} examples/s")
    print(f"batching + augmentation: {augmented:12,.0f} examples/s")
    print(f"MLP training:            {mlp:12,.0f} examples/s")
    print(f"CNN training:            {cnn:12,.0f} examples/s")
    print(f"batching / MLP training = {batching / mlp:.1f}x (target >= 10x)")
    print(f"augmented batching / CNN training = {augmented / cnn:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
