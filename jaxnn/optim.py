"""Optimizers as optax chains: config → ``optax.GradientTransformation``, made only of optax pieces.

Every optimizer built here is the chain::

    clip_by_global_norm(clip_norm)                 # optional
    add_decayed_weights(2·l2, mask=kernels)         # L2 with Keras' meaning: ∇(λ·Σ w²) = 2λw
    <direction>                                     # trace (momentum) / scale_by_adam / _rms / _rss
    add_decayed_weights(weight_decay, mask=kernels) # AdamW's decoupled decay (adamw only)
    inject_hyperparams(scale_by_learning_rate)      # the schedule's value, stored in the state
    inject_hyperparams(scale)(learning_rate_scale)  # ReduceLROnPlateau's factor, a value

wrapped in ``optax.multi_transform`` when layers are frozen and in ``optax.MultiSteps`` for
gradient accumulation. Because the learning rate and its scale are *values* in the optimizer
state, ``current_learning_rate`` reads them at any step and ``set_learning_rate_scale`` changes
the rate without recompiling the train step.

Example::

    tx = build({"name": "adam", "learning_rate": 1e-3, "l2": 1e-4,
                "schedule": {"name": "cosine"}}, steps_per_epoch=469, epochs=10)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "adagrad",
    "adam",
    "adamw",
    "build",
    "current_learning_rate",
    "default_config",
    "freeze",
    "get_learning_rate_scale",
    "kernel_mask",
    "l2_penalty",
    "make_schedule",
    "rmsprop",
    "set_learning_rate_scale",
    "sgd",
]

LearningRate = float | optax.Schedule
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine")


def default_config() -> ml_collections.ConfigDict:
    """Every key ``build`` understands, with Keras' defaults where Keras has one."""
    return ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 1e-3,
            "momentum": 0.0,  # sgd; "momentum"/"nesterov" default to 0.9
            "nesterov": False,
            "b1": 0.9,  # adam, adamw
            "b2": 0.999,
            "eps": 1e-7,  # Keras' epsilon for adam, rmsprop, adagrad
            "rho": 0.9,  # rmsprop's decay of the squared-gradient average
            "initial_accumulator_value": 0.1,  # adagrad
            "weight_decay": 0.0,  # decoupled (AdamW-style), on kernels only
            "l2": 0.0,  # λ of the penalty λ·Σ kernel², as Keras' kernel_regularizer=l2(λ)
            "clip_norm": 0.0,  # global-norm clipping; 0 = off
            "accumulate_steps": 1,  # gradient accumulation over k steps (optax.MultiSteps)
            "freeze": (),  # parameter path prefixes that get zero updates ("Conv_0", ...)
            "schedule": {
                "name": "constant",
                "decay_factor": 0.5,  # step: × factor every decay_every_epochs
                "decay_every_epochs": 10,
                "decay_rate": 0.96,  # exponential: × rate per decay_epochs (smooth)
                "decay_epochs": 1.0,
                "total_epochs": 0,  # cosine / warmup_cosine length; 0 = the run's epochs
                "warmup_epochs": 1.0,
                "alpha": 0.0,  # cosine's final fraction of the rate
            },
        }
    )


# ------------------------------------------------------------------------------------ masks
def _path_str(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def kernel_mask(params: Any) -> Any:
    """True on Dense/Conv kernels (leaves named ``kernel``), False on biases and BN scale/bias."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _path_str(path).rsplit("/", 1)[-1] == "kernel", params
    )


def l2_penalty(params: Any, l2: float) -> jax.Array:
    """The L2 penalty ``λ·Σ w²`` over kernels only (Keras' ``kernel_regularizer=l2(λ)``).

    Example::

        penalty = l2_penalty(state.params, 1e-4)
    """
    kernels = [
        leaf
        for leaf, is_kernel in zip(
            jax.tree_util.tree_leaves(params),
            jax.tree_util.tree_leaves(kernel_mask(params)),
            strict=True,
        )
        if is_kernel
    ]
    return l2 * sum(jnp.sum(jnp.square(k)) for k in kernels)


# -------------------------------------------------------------------------------- schedules
def make_schedule(
    learning_rate: float,
    schedule: Mapping[str, Any] | None,
    *,
    steps_per_epoch: int,
    epochs: int | None = None,
) -> LearningRate:
    """An optax schedule in steps from a schedule config given in epochs.

    - ``constant``: ``lr``.
    - ``step``: ``lr · factor^⌊epoch / decay_every_epochs⌋`` (staircase exponential decay).
    - ``exponential``: ``lr · rate^(epoch / decay_epochs)``.
    - ``cosine``: ``lr · ((1 − α)·½(1 + cos(π·t/T)) + α)`` over ``T = total_epochs``.
    - ``warmup_cosine``: linear 0 → lr over ``warmup_epochs``, then cosine to ``alpha·lr``.
    """
    schedule = dict(schedule or {})
    name = schedule.get("name", "constant")
    if name not in SCHEDULES:
        raise ValueError(
            f"optimizer.schedule.name: expected one of {list(SCHEDULES)}; got {name!r}"
        )
    merged = {**default_config().schedule.to_dict(), **schedule}
    spe = steps_per_epoch
    if name == "constant":
        return learning_rate
    if name == "step":
        return optax.exponential_decay(
            learning_rate,
            transition_steps=max(1, int(merged["decay_every_epochs"] * spe)),
            decay_rate=merged["decay_factor"],
            staircase=True,
        )
    if name == "exponential":
        return optax.exponential_decay(
            learning_rate,
            transition_steps=max(1, int(merged["decay_epochs"] * spe)),
            decay_rate=merged["decay_rate"],
        )
    total_epochs = merged["total_epochs"] or epochs
    if not total_epochs:
        raise ValueError(
            f"optimizer.schedule.total_epochs: the {name!r} schedule needs its length in epochs; "
            "got 0 and no run length to default to"
        )
    total = max(1, int(total_epochs * spe))
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=total, alpha=merged["alpha"])
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=int(merged["warmup_epochs"] * spe),
        decay_steps=total,
        end_value=merged["alpha"] * learning_rate,
    )


# ------------------------------------------------------------------------------- the chain
def _learning_rate_scale(learning_rate_scale: float) -> optax.GradientTransformation:
    return optax.scale(learning_rate_scale)


def _direction(name: str, c: Mapping[str, Any]) -> optax.GradientTransformation:
    if name in ("sgd", "momentum", "nesterov"):
        momentum = c["momentum"] or (0.9 if name != "sgd" else 0.0)
        if not momentum:
            return optax.identity()
        return optax.trace(decay=momentum, nesterov=bool(c["nesterov"]) or name == "nesterov")
    if name in ("adam", "adamw"):
        return optax.scale_by_adam(b1=c["b1"], b2=c["b2"], eps=c["eps"])
    if name == "rmsprop":
        # Keras' RMSprop: v = ρv + (1−ρ)g², step g / (√v + ε) (ε outside the root).
        rms = optax.scale_by_rms(decay=c["rho"], eps=c["eps"], eps_in_sqrt=False)
        if c["momentum"]:
            return optax.chain(rms, optax.trace(decay=c["momentum"]))
        return rms
    # adagrad: optax's form, g / √(Σg² + ε), accumulator starting at 0.1 as in Keras.
    return optax.scale_by_rss(
        initial_accumulator_value=c["initial_accumulator_value"], eps=c["eps"]
    )


def _check_keys(config: Mapping[str, Any], valid: Mapping[str, Any], where: str) -> None:
    for key in config:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(
                f"{where}{key}: unknown optimizer config key{hint} Valid keys: {sorted(valid)}"
            )


def build(
    config: Mapping[str, Any] | ml_collections.ConfigDict,
    *,
    steps_per_epoch: int,
    epochs: int | None = None,
) -> optax.GradientTransformation:
    """Builds the optimizer chain a config describes (see ``default_config`` for every key).

    Args:
      config: a dict or ConfigDict; ``name`` is one of ``OPTIMIZERS``; missing keys take
        ``default_config()``'s values.
      steps_per_epoch: converts the schedule's epochs into steps.
      epochs: the run's length, the default length of cosine schedules.

    Raises:
      ValueError: for unknown names or keys, listing the valid ones.

    Example::

        tx = build({"name": "momentum", "learning_rate": 0.01, "l2": 1e-4}, steps_per_epoch=100)
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    config = dict(config)
    defaults = default_config().to_dict()
    _check_keys(config, defaults, "optimizer.")
    if isinstance(config.get("schedule"), Mapping):
        _check_keys(config["schedule"], defaults["schedule"], "optimizer.schedule.")
    c = {**defaults, **config}
    name = c["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: expected one of {list(OPTIMIZERS)}; got {name!r}")
    if not isinstance(c["accumulate_steps"], int) or c["accumulate_steps"] < 1:
        raise ValueError(
            f"optimizer.accumulate_steps: expected an integer >= 1; got {c['accumulate_steps']!r}"
        )
    # Schedules count optimizer updates: with accumulation there are k times fewer per epoch.
    updates_per_epoch = max(1, steps_per_epoch // c["accumulate_steps"])
    learning_rate = c["learning_rate"]
    if not callable(learning_rate):
        learning_rate = make_schedule(
            learning_rate, c["schedule"], steps_per_epoch=updates_per_epoch, epochs=epochs
        )
    pieces = []
    if c["clip_norm"]:
        pieces.append(optax.clip_by_global_norm(c["clip_norm"]))
    if c["l2"]:
        pieces.append(optax.add_decayed_weights(2.0 * c["l2"], mask=kernel_mask))
    pieces.append(_direction(name, c))
    weight_decay = c["weight_decay"] or (4e-3 if name == "adamw" else 0.0)  # Keras' AdamW default
    if weight_decay:
        pieces.append(optax.add_decayed_weights(weight_decay, mask=kernel_mask))
    pieces.append(
        optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=learning_rate)
    )
    pieces.append(optax.inject_hyperparams(_learning_rate_scale)(learning_rate_scale=1.0))
    tx = optax.chain(*pieces)
    if c["freeze"]:
        tx = freeze(tx, tuple(c["freeze"]))
    if c["accumulate_steps"] > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=c["accumulate_steps"]).gradient_transformation()
    return tx


def _factory(name: str) -> Callable[..., optax.GradientTransformation]:
    def make(learning_rate: LearningRate, **kwargs: Any) -> optax.GradientTransformation:
        return build({"name": name, "learning_rate": learning_rate, **kwargs}, steps_per_epoch=1)

    return make


def sgd(learning_rate: LearningRate = 0.01, momentum: float = 0.0, nesterov: bool = False):
    """SGD: ``w ← w − lr·g``; with momentum ``v ← μv + g, w ← w − lr·v`` (Nesterov optional)."""
    return _factory("sgd")(learning_rate, momentum=momentum, nesterov=nesterov)


def adam(learning_rate: LearningRate = 1e-3, b1: float = 0.9, b2: float = 0.999, eps=1e-7):
    """Adam: ``w ← w − lr·m̂/(√v̂ + ε)`` with bias-corrected moments (Keras' ε = 1e-7)."""
    return _factory("adam")(learning_rate, b1=b1, b2=b2, eps=eps)


def adamw(learning_rate: LearningRate = 1e-3, weight_decay: float = 4e-3, **kwargs: Any):
    """AdamW: Adam's step plus ``lr·weight_decay·w`` on kernels (decoupled weight decay)."""
    return _factory("adamw")(learning_rate, weight_decay=weight_decay, **kwargs)


def rmsprop(learning_rate: LearningRate = 1e-3, rho: float = 0.9, eps=1e-7, momentum=0.0):
    """RMSprop: ``v ← ρv + (1−ρ)g², w ← w − lr·g/(√v + ε)`` (Keras' form)."""
    return _factory("rmsprop")(learning_rate, rho=rho, eps=eps, momentum=momentum)


def adagrad(learning_rate: LearningRate = 1e-3, initial_accumulator_value=0.1, eps=1e-7):
    """Adagrad: ``a ← a + g², w ← w − lr·g/√(a + ε)``, ``a`` starting at 0.1 (Keras' default)."""
    return _factory("adagrad")(
        learning_rate, initial_accumulator_value=initial_accumulator_value, eps=eps
    )


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]) -> optax.GradientTransformation:
    """Zero updates for parameters whose path (``"Conv_0/kernel"``) starts with a prefix in
    ``frozen``; ``tx`` for the rest (``optax.multi_transform`` with ``optax.set_to_zero``).

    Raises:
      ValueError: at ``init`` when a prefix matches no parameter, listing the top-level names.
    """
    frozen = tuple(frozen)

    def labels(params):
        paths = [_path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        for prefix in frozen:
            if not any(p == prefix or p.startswith(prefix.rstrip("/") + "/") for p in paths):
                top = sorted({p.split("/", 1)[0] for p in paths})
                raise ValueError(
                    f"optimizer.freeze: {prefix!r} matches no parameter; top-level names: {top}"
                )

        def label(path, _):
            s = _path_str(path)
            hit = any(s == f or s.startswith(f.rstrip("/") + "/") for f in frozen)
            return "frozen" if hit else "trainable"

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


# ------------------------------------------------------------------- reading the state
def _is_inject(node: Any) -> bool:
    return isinstance(node, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState)


def _injected(opt_state: Any, key: str) -> list[Any]:
    nodes = jax.tree_util.tree_leaves(opt_state, is_leaf=_is_inject)
    return [n for n in nodes if _is_inject(n) and key in n.hyperparams]


def get_learning_rate_scale(opt_state: Any) -> jax.Array:
    """The ``learning_rate_scale`` value in the state (1.0 unless ReduceLROnPlateau changed it)."""
    found = _injected(opt_state, "learning_rate_scale")
    return found[0].hyperparams["learning_rate_scale"] if found else jnp.asarray(1.0)


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The effective learning rate (schedule value × scale) of the most recent update.

    Before the first update it is the first update's rate. Logged at an epoch's end, it is the
    rate of the epoch's last step.

    Works inside ``jit`` and through chain / MultiSteps / multi_transform states. Returns NaN for
    a user's own optax transformation that stores no injected ``learning_rate``.
    """
    found = _injected(opt_state, "learning_rate")
    if not found:
        return jnp.asarray(jnp.nan, jnp.float32)
    return found[0].hyperparams["learning_rate"] * get_learning_rate_scale(opt_state)


def set_learning_rate_scale(opt_state: Any, value: float) -> Any:
    """Returns ``opt_state`` with ``learning_rate_scale = value``: same shapes and dtypes, so the
    jitted train step runs on without recompiling.

    Raises:
      ValueError: when the state has no ``learning_rate_scale`` (a user's own optax chain).
    """
    if not _injected(opt_state, "learning_rate_scale"):
        raise ValueError(
            "opt_state: expected a jaxnn.optim chain with a learning_rate_scale; this optimizer "
            "has none (build it with jaxnn.optim.build to use ReduceLROnPlateau)"
        )

    def replace(node):
        if _is_inject(node) and "learning_rate_scale" in node.hyperparams:
            old = node.hyperparams["learning_rate_scale"]
            hyperparams = {**node.hyperparams, "learning_rate_scale": jnp.asarray(value, old.dtype)}
            return node._replace(hyperparams=hyperparams)
        return node

    return jax.tree_util.tree_map(replace, opt_state, is_leaf=_is_inject)
