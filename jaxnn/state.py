"""The train-state pytree: everything a train step reads and writes, and nothing else.

The model and the optimizer are not stored here (they are code, not data), so the state can be
checkpointed, donated to ``jax.jit`` and compared bitwise.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxnn import sharding

# XLA CPU compile options for the one-off state initialisation (see init_on_mesh).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}

__all__ = [
    "TrainState",
    "create_train_state",
    "init_compiler_options",
    "init_lowered",
    "init_on_mesh",
    "rng_streams",
]


@flax.struct.dataclass
class TrainState:
    """Parameters, BatchNorm statistics, optimizer state, step counter and the dropout key.

    Attributes:
      step: number of optimizer updates applied so far (int32 scalar).
      params: the model's ``params`` collection.
      batch_stats: the model's ``batch_stats`` collection (an empty dict without BatchNorm).
      opt_state: the optax state of the optimizer.
      rng: the base dropout key; the key of step ``s`` is ``jax.random.fold_in(rng, s)``.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        """The variables for ``model.apply``: params and, when present, batch_stats."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def rng_streams(seed: int) -> dict[str, jax.Array]:
    """Derives every random stream of a run from one seed by ``fold_in`` (big_vision's habit).

    Returns a dict with keys ``init`` (parameter initialisation), ``dropout`` (the train state's
    key: each step folds in its number, then 0 for dropout and 1 for augmentation) and ``data``
    (epoch permutations). The validation split is numpy's ``default_rng(seed)`` permutation
    (``jaxnn.data.train_validation_split``), the same one ``jaxnn.run`` uses.
    """
    root = jax.random.key(seed)
    names = ("init", "dropout", "data")
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(names)}


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_input: jax.Array,
    *,
    seed: int = 0,
) -> TrainState:
    """Initialises the model on ``sample_input`` (only its shape and dtype matter) and ``tx``.

    Example::

        state = create_train_state(MLP(), optax.adam(1e-3), jnp.zeros((1, 784)), seed=0)
    """
    streams = rng_streams(seed)
    variables = model.init(streams["init"], sample_input, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=jax.random.key_data(streams["dropout"]),
    )


def init_on_mesh(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    *,
    seed: int,
    mesh: jax.sharding.Mesh,
) -> TrainState:
    """``create_train_state`` as one compiled call whose result is replicated over ``mesh``.

    Op by op, initialisation dispatches dozens of small compilations. It runs once, so on CPU it
    is compiled without LLVM's optimisations (uniform initialisers give the same bits; normal
    ones, through erfinv, differ in the last bits).
    """
    return init_lowered(model, tx, input_shape, seed=seed, mesh=mesh).compile()()


def init_lowered(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    *,
    seed: int,
    mesh: jax.sharding.Mesh,
) -> jax.stages.Lowered:
    """``init_on_mesh``'s computation traced and lowered, not yet compiled: its ``out_info`` is
    the state's shapes, dtypes and shardings, and ``.compile()()`` returns the state."""

    def init() -> TrainState:
        sample = jnp.zeros((1, *input_shape), jnp.float32)
        return create_train_state(model, tx, sample, seed=seed)

    options = init_compiler_options(mesh)
    return jax.jit(init, out_shardings=sharding.replicated(mesh), compiler_options=options).lower()


def init_compiler_options(mesh: jax.sharding.Mesh) -> dict[str, Any] | None:
    """XLA options for a computation that runs once, an initialisation: on CPU without LLVM's
    optimisations (see ``init_on_mesh``), elsewhere XLA's defaults (None)."""
    return _INIT_COMPILER_OPTIONS if mesh.devices.flat[0].platform == "cpu" else None
