"""The ``flax`` peer: a hand-written Linen + Optax loop in the style of the Flax examples
(``examples/mnist``): a TrainState, one ``@jax.jit`` step per batch, host-side numpy batching of a
per-epoch permutation, ``nn.max_pool``.

Imported by the flax worker only.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from experiments.benchmark.common import BATCH_SIZE, EVAL_BATCH_SIZE, LEARNING_RATE, Peer


class MLP(nn.Module):
    """Flatten-Dense128-ReLU-Dropout0.2-Dense128-ReLU-Dropout0.2-Dense10."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = x.reshape((x.shape[0], -1))
        for _ in range(2):
            x = nn.relu(nn.Dense(128)(x))
            x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(10)(x)


class CNN(nn.Module):
    """(Conv3x3-BN-ReLU-MaxPool2) x 2 with 32 and 64 filters, Dropout0.4-Dense128-ReLU-Dense10."""

    @nn.compact
    def __call__(self, x, train: bool):
        for features in (32, 64):
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(0.4, deterministic=not train)(x)
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_key: jax.Array


def _variables(state: TrainState, params: Any) -> dict[str, Any]:
    if state.batch_stats:
        return {"params": params, "batch_stats": state.batch_stats}
    return {"params": params}


def step(state: TrainState, images: jax.Array, labels: jax.Array):
    """One Adam step on a batch; returns the new state, the loss and the batch accuracy.

    Not jitted itself: ``train_step`` jits it for this loop, and the ``flax_resident`` and
    ``flax_scan`` loops call it inside their own jitted functions, so that every Flax loop trains
    the same model with the same arithmetic.
    """
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            _variables(state, params),
            images,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if state.batch_stats:
        state = state.replace(batch_stats=updates["batch_stats"])
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, loss, accuracy


train_step = jax.jit(step)


@jax.jit
def eval_step(state: TrainState, images: jax.Array, labels: jax.Array) -> jax.Array:
    """The number of correct predictions in a batch."""
    logits = state.apply_fn(_variables(state, state.params), images, train=False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)


class FlaxPeer(Peer):
    """The Flax example's loop; it drops the incomplete last batch of each epoch."""

    def __init__(self, workload: str, data: dict[str, np.ndarray], seed: int = 0):
        super().__init__(workload, data, seed)
        self.steps = len(data["x_train"]) // BATCH_SIZE
        self.examples_per_epoch = self.steps * BATCH_SIZE

    def build(self) -> None:
        model = MLP() if self.workload == "mlp" else CNN()
        init_key, dropout_key = jax.random.split(jax.random.key(self.seed))
        variables = model.init(init_key, jnp.ones((1, 28, 28, 1)), train=False)
        self.state = TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            tx=optax.adam(LEARNING_RATE),
            batch_stats=variables.get("batch_stats", {}),
            dropout_key=dropout_key,
        )
        self.rng = np.random.default_rng(self.seed)
        self.x_test, self.y_test = self.data["x_test"], self.data["y_test"]

    def epoch_batches(self) -> np.ndarray:
        """This epoch's ``(steps, BATCH_SIZE)`` training indices: a fresh permutation, its
        incomplete last batch dropped."""
        perm = self.rng.permutation(len(self.data["x_train"]))[: self.examples_per_epoch]
        return perm.reshape(self.steps, BATCH_SIZE)

    def train_epoch(self) -> None:
        x, y = self.data["x_train"], self.data["y_train"]
        epoch_loss, epoch_accuracy = [], []
        for perm in self.epoch_batches():
            self.state, loss, accuracy = train_step(self.state, x[perm], y[perm])
            epoch_loss.append(loss)
            epoch_accuracy.append(accuracy)
        # As the example does, fetch the epoch's metrics: this waits for the last step.
        self.train_metrics = (
            np.mean(jax.device_get(epoch_loss)),
            np.mean(jax.device_get(epoch_accuracy)),
        )

    def test_accuracy(self) -> float:
        correct = 0
        for i in range(0, len(self.x_test), EVAL_BATCH_SIZE):
            s = slice(i, i + EVAL_BATCH_SIZE)
            correct += int(eval_step(self.state, self.x_test[s], self.y_test[s]))
        return correct / len(self.x_test)
