"""The ``flax_resident`` and ``flax_scan`` peers: the ``flax`` peer's models, loss and Adam step
(``flax_peer.step``) in the loop a JAX expert writes instead of the Flax example's.

* ``flax_resident``: the training and test sets are put on the device once, at setup; each epoch's
  permutation is drawn on the host and put on the device as one ``(steps, batch)`` index array; the
  jitted step gathers its batch itself (``x[idx]``) and donates the train state
  (``donate_argnums``), so that a step moves no data between host and device and updates the
  state's buffers in place.
* ``flax_scan`` (a reference, not a loop most users write): the same, with a whole epoch's steps in
  one ``jax.lax.scan`` inside one jitted call, so Python dispatches once per epoch.

Imported by the flax_resident and flax_scan workers only.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from experiments.benchmark.flax_peer import FlaxPeer, TrainState, step


@functools.partial(jax.jit, donate_argnums=0)
def resident_train_step(state: TrainState, x: jax.Array, y: jax.Array, idx: jax.Array):
    """``step`` on the batch ``x[idx], y[idx]`` gathered on the device; ``state`` is donated."""
    return step(state, x[idx], y[idx])


@functools.partial(jax.jit, donate_argnums=0)
def scan_train_epoch(state: TrainState, x: jax.Array, y: jax.Array, batches: jax.Array):
    """``resident_train_step`` for each row of ``batches`` (``(steps, batch)`` indices) in one
    ``lax.scan``; returns the state and the per-step losses and accuracies."""

    def body(state, idx):
        state, loss, accuracy = step(state, x[idx], y[idx])
        return state, (loss, accuracy)

    state, (losses, accuracies) = jax.lax.scan(body, state, batches)
    return state, losses, accuracies


class FlaxResidentPeer(FlaxPeer):
    """The data on the device, one donated jitted step per batch that gathers its own batch."""

    def build(self) -> None:
        super().build()
        # Placing the data is setup, timed like jaxnn's and PyTorch's.
        arrays = ("x_train", "y_train", "x_test", "y_test")
        self.x, self.y, self.x_test, self.y_test = jax.block_until_ready(
            jax.device_put([self.data[name] for name in arrays])
        )

    def device_epoch_batches(self) -> jax.Array:
        """``epoch_batches()`` as int32 indices on the device (one transfer per epoch)."""
        return jax.device_put(self.epoch_batches().astype(np.int32))

    def train_epoch(self) -> None:
        epoch_loss, epoch_accuracy = [], []
        for idx in self.device_epoch_batches():
            self.state, loss, accuracy = resident_train_step(self.state, self.x, self.y, idx)
            epoch_loss.append(loss)
            epoch_accuracy.append(accuracy)
        # As the flax peer does, fetch the epoch's metrics: this waits for the last step.
        self.train_metrics = (
            np.mean(jax.device_get(epoch_loss)),
            np.mean(jax.device_get(epoch_accuracy)),
        )


class FlaxScanPeer(FlaxResidentPeer):
    """``FlaxResidentPeer`` with the epoch's steps in one ``lax.scan``: one dispatch per epoch."""

    def train_epoch(self) -> None:
        batches = self.device_epoch_batches()
        self.state, losses, accuracies = scan_train_epoch(self.state, self.x, self.y, batches)
        self.train_metrics = (np.mean(jax.device_get(losses)), np.mean(jax.device_get(accuracies)))

    def skip_reason(self) -> str | None:
        if self.workload == "cnn" and jax.default_backend() == "cpu":
            return (
                "flax_scan runs the CNN only where JAX runs on a GPU: on XLA CPU a lax.scan of CNN "
                "steps runs several times slower than the same steps dispatched one by one (as "
                "--sweep-dispatch shows for jaxnn), so a full run would take hours"
            )
        return None
