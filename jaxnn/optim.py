"""Optimizers as optax chains: config → ``optax.GradientTransformation``, made only of optax pieces.

Every optimizer built here is the chain::

    clip_by_global_norm(clip_norm)                   # optional
    add_decayed_weights(2·l2, mask=kernels)          # L2 with Keras' meaning: ∇(λ·Σ w²) = 2λw
    <direction>                                      # trace / scale_by_adam / _rms / _rss
    add_decayed_weights(weight_decay, mask=kernels)  # decoupled (AdamW) decay, × lr below
    inject_hyperparams(scale_by_learning_rate)       # the schedule's value, stored in the state
    inject_hyperparams(scale)(learning_rate_scale)   # ReduceLROnPlateau's factor, a value

wrapped in ``optax.multi_transform`` when layers are frozen and then in ``optax.MultiSteps`` for
gradient accumulation. Because the learning rate and its scale are *values* in the optimizer
state, ``current_learning_rate`` reads them at any step and ``set_learning_rate_scale`` changes
the rate without recompiling the train step.

"Kernels" are the leaves whose last path key is ``kernel`` (Dense and Conv weights); biases and
BatchNorm scale/bias are never decayed, as with Keras' ``kernel_regularizer``.

Example::

    tx = build({"name": "adam", "learning_rate": 1e-3, "l2": 1e-4,
                "schedule": {"name": "cosine"}}, steps_per_epoch=469, epochs=10)
    opt_state = tx.init(params)
    current_learning_rate(opt_state)  # 1e-3
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxnn.utils import last_key, path_str

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TRACEABLE",
    "adagrad",
    "adam",
    "adamw",
    "build",
    "check_config",
    "current_learning_rate",
    "default_config",
    "freeze",
    "get_learning_rate_scale",
    "kernel_mask",
    "l2_penalty",
    "make_schedule",
    "rmsprop",
    "run_lengths_read",
    "set_learning_rate_scale",
    "sgd",
]

LearningRate = float | optax.Schedule
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup_cosine")

# The numbers ``build(values=...)`` may take as (traced) arrays: a sweep trains configs that
# differ only in these in one vmapped program. The rest shape the chain in Python (names,
# schedule lengths, decay factors that optax checks) and so must be the same for all members.
TRACEABLE = (
    "learning_rate",
    "momentum",
    "b1",
    "b2",
    "eps",
    "rho",
    "l2",
    "weight_decay",
    "clip_norm",
    "schedule.alpha",
)

_KERAS_ADAMW_WEIGHT_DECAY = 4e-3  # keras.optimizers.AdamW's default
_DEFAULT_MOMENTUM = 0.9  # for the names "momentum" and "nesterov"


def _unset() -> Any:
    """None that a float may replace, also from the command line (``--config.x=0.9``)."""
    return ml_collections.config_dict.placeholder(float)


def default_config() -> ml_collections.ConfigDict:
    """Every key ``build`` understands, with Keras' defaults where Keras has one.

    ``None`` means "the named optimizer's default" (``momentum``: 0.9 for ``"momentum"`` and
    ``"nesterov"``, else 0; ``weight_decay``: 4e-3 for ``"adamw"``, else 0).

    Example::

        config = default_config()
        config.name = "momentum"
        config.schedule.name = "step"
        tx = build(config, steps_per_epoch=100)
    """
    return ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 1e-3,
            "momentum": _unset(),  # sgd/rmsprop: 0; "momentum"/"nesterov": 0.9
            "nesterov": False,
            "b1": 0.9,  # adam, adamw
            "b2": 0.999,
            "eps": 1e-7,  # Keras' epsilon for adam, rmsprop, adagrad
            "rho": 0.9,  # rmsprop's decay of the squared-gradient average (Keras' name)
            "initial_accumulator_value": 0.1,  # adagrad
            "weight_decay": _unset(),  # decoupled, × lr, on kernels; adamw: 4e-3, others: 0
            "l2": 0.0,  # λ of the penalty λ·Σ kernel², as Keras' kernel_regularizer=l2(λ)
            "clip_norm": 0.0,  # global-norm clipping; 0 or None = off
            "accumulate_steps": 1,  # gradient accumulation over k steps (optax.MultiSteps)
            "freeze": (),  # parameter path prefixes that get zero updates ("Conv_0", ...)
            "schedule": {
                "name": "constant",
                "decay_factor": 0.5,  # step: × factor every decay_every_epochs
                "decay_every_epochs": 10,
                "decay_rate": 0.96,  # exponential: × rate per decay_epochs (smooth)
                "decay_epochs": 1.0,
                "total_epochs": 0,  # cosine / warmup_cosine length; 0 = the run's epochs
                "warmup_epochs": 1.0,  # warmup_cosine: linear 0 → lr over these epochs
                "alpha": 0.0,  # cosine / warmup_cosine: the final rate as a fraction of lr
            },
        }
    )


# ------------------------------------------------------------------------ the config boundary
@dataclasses.dataclass(frozen=True)
class _Range:
    """An interval of finite numbers; ``str()`` is how error messages word it."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f"a finite number {'>=' if self.low_closed else '>'} {self.low:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"a number in {left}{self.low:g}, {self.high:g}{right}"


_POSITIVE = _Range(0.0, low_closed=False)
_NON_NEGATIVE = _Range(0.0)
_AVERAGE_DECAY = _Range(0.0, 1.0)  # [0, 1): 1 would never move the running average
_DECAY_PER_PERIOD = _Range(0.0, 1.0, low_closed=False, high_closed=True)  # (0, 1]
_FRACTION = _Range(0.0, 1.0, high_closed=True)  # [0, 1]
_RANGES = {
    "momentum": _AVERAGE_DECAY,
    "b1": _AVERAGE_DECAY,
    "b2": _AVERAGE_DECAY,
    "rho": _AVERAGE_DECAY,
    "eps": _POSITIVE,
}
_SCHEDULE_RANGES = {
    "decay_factor": _DECAY_PER_PERIOD,
    "decay_every_epochs": _POSITIVE,
    "decay_rate": _DECAY_PER_PERIOD,
    "decay_epochs": _POSITIVE,
    "total_epochs": _NON_NEGATIVE,
    "warmup_epochs": _NON_NEGATIVE,
    "alpha": _FRACTION,
}


def _check_number(where: str, value: Any, allowed: _Range) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value not in allowed:
        raise ValueError(f"{where}: expected {allowed}; got {value!r}")


def _check_keys(config: Mapping[str, Any], valid: Mapping[str, Any], where: str) -> None:
    for key in config:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
            hint = f"; did you mean {close}?" if close else ";"
            raise ValueError(
                f"{where}{key}: unknown optimizer config key{hint} valid keys: {sorted(valid)}"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_learning_rate(learning_rate: Any) -> LearningRate:
    """A number as a float, or an optax schedule (a callable) as it is."""
    if callable(learning_rate):
        return learning_rate
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float):
        raise ValueError(
            f"optimizer.learning_rate: expected a float or an optax schedule; got {learning_rate!r}"
        )
    _check_number("optimizer.learning_rate", learning_rate, _POSITIVE)
    return float(learning_rate)


def _checked_schedule(schedule: Any) -> dict[str, Any]:
    """A schedule config (None: constant) merged over the defaults, its name and keys checked."""
    if isinstance(schedule, ml_collections.ConfigDict):
        schedule = schedule.to_dict()
    if schedule is not None and not isinstance(schedule, Mapping):
        raise ValueError(
            f"optimizer.schedule: expected a dict with a 'name' in {list(SCHEDULES)}; "
            f"got {schedule!r}"
        )
    defaults = default_config().schedule.to_dict()
    _check_keys(schedule or {}, defaults, "optimizer.schedule.")
    s = {**defaults, **(schedule or {})}
    if s["name"] not in SCHEDULES:
        raise ValueError(
            f"optimizer.schedule.name: expected one of {list(SCHEDULES)}; got {s['name']!r}"
        )
    if s["total_epochs"] is None:
        s["total_epochs"] = 0  # both mean "the run's length"
    for key, allowed in _SCHEDULE_RANGES.items():
        _check_number(f"optimizer.schedule.{key}", s[key], allowed)
    return s


def _fill_named_defaults(c: dict[str, Any]) -> None:
    """Replaces the "the named optimizer's default" values (None) by the numbers they stand for."""
    name = c["name"]
    if c["momentum"] is None:
        c["momentum"] = _DEFAULT_MOMENTUM if name in ("momentum", "nesterov") else 0.0
    c["nesterov"] = bool(c["nesterov"]) or name == "nesterov"
    if c["weight_decay"] is None:
        c["weight_decay"] = _KERAS_ADAMW_WEIGHT_DECAY if name == "adamw" else 0.0
    for key in ("l2", "clip_norm"):
        if c[key] is None:
            c[key] = 0.0  # off, as 0 is


def check_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
    """Checks an optimizer config once and returns it complete, as ``build`` will use it.

    The one validation of an optimizer config: ``build`` and ``make_schedule`` go through it
    too. Call it at the edge of a run, before anything is written, and keep what it returns.

    Returns:
      a new dict with every key of ``default_config()``: missing keys take their defaults, the
      schedule is a complete dict, ``None`` values are resolved for the named optimizer
      (``momentum``: 0.9 for ``"momentum"`` / ``"nesterov"``, else 0; ``weight_decay``: 4e-3
      for ``"adamw"``, else 0; ``l2``, ``clip_norm``: 0; ``nesterov`` is True for
      ``"nesterov"``), a numeric ``learning_rate`` is a float and ``freeze`` is a tuple.
      Checking the result again returns an equal dict; ``build`` gives the same optimizer for it.

    Raises:
      ValueError: naming the key, what was expected and what was given; unknown names list the
        valid ones and unknown keys their close matches. Numbers must make sense:
        ``learning_rate``, ``eps`` > 0 and finite; ``momentum``, ``b1``, ``b2``, ``rho`` in
        [0, 1); ``l2``, ``clip_norm``, ``weight_decay`` >= 0; the schedule's ``decay_factor``,
        ``decay_rate`` in (0, 1], ``decay_every_epochs``, ``decay_epochs`` > 0,
        ``warmup_epochs``, ``total_epochs`` >= 0, ``alpha`` in [0, 1]. (A cosine schedule's
        length and the ``freeze`` prefixes need the run and the parameters; ``build`` checks
        them.)

    Example::

        check_config({"name": "adamw"})["weight_decay"]  # 0.004
        check_config({"name": "adamm"})  # ValueError: optimizer.name: expected one of [...]
    """
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a dict or ConfigDict; got {type(config).__name__}")
    defaults = default_config().to_dict()
    _check_keys(config, defaults, "optimizer.")
    c = {**defaults, **config, "schedule": _checked_schedule(config.get("schedule"))}
    if c["name"] not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: expected one of {list(OPTIMIZERS)}; got {c['name']!r}")
    k = c["accumulate_steps"]
    if not _is_int(k) or k < 1:
        raise ValueError(f"optimizer.accumulate_steps: expected an integer >= 1; got {k!r}")
    c["learning_rate"] = _checked_learning_rate(c["learning_rate"])
    for key in ("l2", "clip_norm", "weight_decay"):
        if c[key] is not None and not (isinstance(c[key], numbers.Real) and c[key] >= 0):
            raise ValueError(f"optimizer.{key}: expected a number >= 0 (or None); got {c[key]!r}")
    _fill_named_defaults(c)
    for key, allowed in _RANGES.items():
        _check_number(f"optimizer.{key}", c[key], allowed)
    frozen = (c["freeze"],) if isinstance(c["freeze"], str) else c["freeze"]
    if not all(isinstance(f, str) for f in frozen):
        raise ValueError(
            f"optimizer.freeze: expected a list of parameter path prefixes; got {c['freeze']!r}"
        )
    c["freeze"] = tuple(frozen)
    return c


# ------------------------------------------------------------------------------------ masks
def kernel_mask(params: Any) -> Any:
    """A pytree of bools like ``params``: True on kernels (leaves named ``kernel``).

    Dense and Conv weights are kernels; biases and BatchNorm ``scale``/``bias`` are not.

    Example::

        kernel_mask({"Dense_0": {"kernel": w, "bias": b}})
        # {"Dense_0": {"kernel": True, "bias": False}}
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: last_key(path) == "kernel", params)


def l2_penalty(params: Any, l2: float) -> jax.Array:
    """The L2 penalty ``λ·Σ_kernels Σ w²``, Keras' ``kernel_regularizer=l2(λ)``, summed over layers.

    Its gradient, ``2λw`` on kernels and 0 elsewhere, is what ``build``'s ``l2`` adds to the
    gradients (``optax.add_decayed_weights(2λ, mask=kernel_mask)``), so the training loss need
    not include it; use this function to report it.

    Example::

        l2_penalty({"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}, 0.01)  # 0.04
    """
    leaves = jax.tree_util.tree_leaves(params)
    mask = jax.tree_util.tree_leaves(kernel_mask(params))
    total = jnp.zeros((), jnp.float32)
    for leaf, is_kernel in zip(leaves, mask, strict=True):
        if is_kernel:
            total = total + jnp.sum(jnp.square(leaf))
    return l2 * total


# -------------------------------------------------------------------------------- schedules
def make_schedule(
    learning_rate: float,
    schedule: Mapping[str, Any] | None,
    *,
    steps_per_epoch: float,
    epochs: int | None = None,
) -> LearningRate:
    """An optax schedule counted in optimizer steps, from a schedule config given in epochs.

    With ``e = step / steps_per_epoch`` and ``lr = learning_rate``:

    - ``constant``: ``lr`` (returned as the float itself).
    - ``step``: ``lr · decay_factor^⌊e / decay_every_epochs⌋`` (``optax.exponential_decay`` with
      ``staircase=True``, ``transition_steps = decay_every_epochs · steps_per_epoch``).
    - ``exponential``: ``lr · decay_rate^(e / decay_epochs)``.
    - ``cosine``: ``lr · ((1 − α)·½(1 + cos(π·min(e, T)/T)) + α)``, ``T = total_epochs``.
    - ``warmup_cosine``: ``lr · e / W`` for ``e < W = warmup_epochs``, then the cosine from
      ``lr`` to ``α·lr`` over the remaining ``T − W`` epochs (``T`` includes the warmup).

    ``total_epochs = 0`` takes ``epochs`` (the run's length).

    Raises:
      ValueError: as ``check_config`` for the learning rate and the schedule (an unknown name
        lists ``SCHEDULES``), and for a cosine schedule without a length.

    Example::

        s = make_schedule(0.1, {"name": "step", "decay_factor": 0.5, "decay_every_epochs": 2},
                          steps_per_epoch=100)
        s(199), s(200)  # 0.1, 0.05
    """
    return _schedule(
        _checked_learning_rate(learning_rate),
        _checked_schedule(schedule),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )


def _schedule(
    learning_rate: float | jax.Array,
    s: Mapping[str, Any],
    *,
    steps_per_epoch: float,
    epochs: int | None,
    alpha: float | jax.Array | None = None,
) -> LearningRate:
    """``make_schedule`` for a checked rate and a complete, checked schedule config ``s``.

    ``learning_rate`` and ``alpha`` (default ``s["alpha"]``) may be traced arrays (a sweep's
    per-member values): the schedule is then a function of them.
    """
    name = s["name"]
    alpha = s["alpha"] if alpha is None else alpha

    def steps(epochs_: float, minimum: int = 1) -> int:
        return max(minimum, round(epochs_ * steps_per_epoch))

    if name == "constant":
        return learning_rate
    if name == "step":
        return optax.exponential_decay(
            learning_rate,
            transition_steps=steps(s["decay_every_epochs"]),
            decay_rate=s["decay_factor"],
            staircase=True,
        )
    if name == "exponential":
        return optax.exponential_decay(
            learning_rate, transition_steps=steps(s["decay_epochs"]), decay_rate=s["decay_rate"]
        )
    total_epochs = s["total_epochs"] or epochs
    if not total_epochs:
        raise ValueError(
            f"optimizer.schedule.total_epochs: the {name!r} schedule needs its length in epochs; "
            "got 0 and no run length (epochs) to default to"
        )
    total = steps(total_epochs)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=total, alpha=alpha)
    warmup = steps(s["warmup_epochs"], minimum=0)
    if warmup >= total:
        raise ValueError(
            "optimizer.schedule.warmup_epochs: expected fewer warmup epochs than total epochs "
            f"({total_epochs}); got {s['warmup_epochs']}"
        )
    return _warmup_cosine(learning_rate, warmup, total, alpha)


def _warmup_cosine(learning_rate: Any, warmup: int, total: int, alpha: Any) -> optax.Schedule:
    """0 → ``learning_rate`` over ``warmup`` steps, then a cosine to ``alpha · learning_rate``
    at step ``total``; the rate and ``alpha`` may be traced."""
    if isinstance(learning_rate, jax.Array) or isinstance(alpha, jax.Array):
        # optax's warmup_cosine_decay_schedule branches on the peak value in Python: the same
        # two pieces, joined, with the traced numbers.
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, transition_steps=warmup),
                optax.cosine_decay_schedule(learning_rate, decay_steps=total - warmup, alpha=alpha),
            ],
            [warmup],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup,
        decay_steps=total,
        end_value=alpha * learning_rate,
    )


# ------------------------------------------------------------------------------- the chain
def _direction(c: Mapping[str, Any], v: Mapping[str, Any]) -> optax.GradientTransformation:
    """The optimizer's update direction, before the learning rate: which pieces from the checked
    config ``c``, their numbers from ``v`` (``c`` with any traced ``values``, see ``build``)."""
    name = c["name"]
    if name in ("sgd", "momentum", "nesterov"):
        if not c["momentum"]:
            return optax.identity()
        return optax.trace(decay=v["momentum"], nesterov=c["nesterov"])
    if name in ("adam", "adamw"):
        return optax.scale_by_adam(b1=v["b1"], b2=v["b2"], eps=v["eps"])
    if name == "rmsprop":
        # Keras 3's RMSprop: v = ρv + (1−ρ)g², step g / √(v + ε) (ε inside the root).
        rms = optax.scale_by_rms(decay=v["rho"], eps=v["eps"], eps_in_sqrt=True)
        if c["momentum"]:
            return optax.chain(rms, optax.trace(decay=v["momentum"]))
        return rms
    # Keras' Adagrad: a = a₀ + Σg², step g / √(a + ε).
    return optax.scale_by_rss(
        initial_accumulator_value=c["initial_accumulator_value"], eps=v["eps"]
    )


def _chain(
    c: Mapping[str, Any], v: Mapping[str, Any], learning_rate: LearningRate
) -> optax.GradientTransformation:
    """clip → L2 → direction → decoupled decay → learning rate → its scale: the pieces a checked
    config ``c`` turns on, with the numbers of ``v``."""
    pieces = []
    if c["clip_norm"]:
        pieces.append(optax.clip_by_global_norm(v["clip_norm"]))
    if c["l2"]:
        pieces.append(optax.add_decayed_weights(2.0 * v["l2"], mask=kernel_mask))
    pieces.append(_direction(c, v))
    if c["weight_decay"]:
        pieces.append(optax.add_decayed_weights(v["weight_decay"], mask=kernel_mask))
    pieces.append(
        optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=learning_rate)
    )
    # A plain number in the state: the host may change it between steps (ReduceLROnPlateau).
    pieces.append(optax.inject_hyperparams(_scale_by_learning_rate_scale)(learning_rate_scale=1.0))
    return optax.chain(*pieces)


def build(
    config: Mapping[str, Any] | ml_collections.ConfigDict,
    *,
    steps_per_epoch: int,
    epochs: int | None = None,
    params: Any = None,
    values: Mapping[str, Any] | None = None,
) -> optax.GradientTransformation:
    """Builds the optimizer chain a config describes (see ``default_config`` for every key).

    The chain of the module docstring, then ``freeze`` and ``optax.MultiSteps``. Per step, with
    ``g`` the gradient and ``d(·)`` the direction (momentum, Adam, RMSprop, Adagrad)::

        g ← g · min(1, clip_norm / ‖g‖)        (global norm over all leaves)
        g ← g + 2·l2·w                          (kernels only)
        u = −lr(t) · scale · (d(g) + weight_decay·w)   (decay on kernels only)

    With ``accumulate_steps = k`` the update is applied every k-th call with the mean of the k
    gradients (zero updates in between), so the effective batch is ``k × batch``; schedules then
    count applied updates, ``steps_per_epoch / k`` per epoch.

    Args:
      config: a dict or ConfigDict (``check_config`` checks it and fills in the defaults); a
        ``learning_rate`` may also be an optax schedule (then ``schedule`` is ignored).
      steps_per_epoch: training steps (batches) per epoch; converts the schedule's epochs.
      epochs: the run's length, the default length of cosine schedules.
      params: optional; when given, ``freeze`` prefixes are checked now instead of at ``init``.
      values: numbers (traced arrays in a sweep's vmapped step) in place of the config's, keyed
        as in ``TRACEABLE``; the config still decides which pieces the chain has (a zero ``l2``
        leaves its piece out), so a value must keep its piece on or off as the config has it.

    Raises:
      ValueError: as ``check_config``, and for a schedule that does not fit the run.

    Example::

        tx = build({"name": "momentum", "learning_rate": 0.01, "l2": 1e-4}, steps_per_epoch=100)
        updates, opt_state = tx.update(grads, tx.init(params), params)
    """
    if not _is_int(steps_per_epoch) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch: expected an integer >= 1; got {steps_per_epoch!r}")
    c = check_config(config)
    v = _with_values(c, values or {})
    k, learning_rate = c["accumulate_steps"], v["learning_rate"]
    if not callable(learning_rate):
        # Schedules count applied updates: with accumulation there are k times fewer per epoch.
        per_epoch, alpha = steps_per_epoch / k, v["schedule.alpha"]
        learning_rate = _schedule(
            learning_rate, c["schedule"], steps_per_epoch=per_epoch, epochs=epochs, alpha=alpha
        )
    tx = _chain(c, v, learning_rate)
    if c["freeze"]:
        if params is not None:
            _check_prefixes(params, c["freeze"])
        tx = freeze(tx, c["freeze"])
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
    return tx


def run_lengths_read(
    config: Mapping[str, Any] | ml_collections.ConfigDict,
    *,
    steps_per_epoch: int,
    epochs: int | None = None,
) -> tuple[int | None, ...]:
    """What ``build(config, steps_per_epoch=..., epochs=...)`` reads of the run's lengths.

    ``build`` gives the same chain for any two pairs of lengths with the same result, so a
    caller may keep a chain it built (and the steps compiled with it) while this stays the
    same: ``()`` for a constant rate or a rate that is an optax schedule of its own,
    ``(steps_per_epoch,)`` for schedules whose epochs are all given (step, exponential, a cosine
    with ``total_epochs``), ``(steps_per_epoch, epochs)`` for a cosine over the run's length.

    Example::

        run_lengths_read({"name": "adam"}, steps_per_epoch=469, epochs=10)  # ()
        run_lengths_read({"schedule": {"name": "cosine"}}, steps_per_epoch=469, epochs=10)
        # (469, 10)
    """
    c = check_config(config)
    schedule = c["schedule"]
    if callable(c["learning_rate"]) or schedule["name"] == "constant":
        return ()
    if schedule["name"] in ("step", "exponential") or schedule["total_epochs"]:
        return (steps_per_epoch,)
    return (steps_per_epoch, epochs)


def _with_values(c: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers ``build`` uses: the checked config's, with ``values`` in their place."""
    unknown = sorted(set(values) - set(TRACEABLE))
    if unknown:
        raise ValueError(f"values: unknown keys {unknown}; expected keys from {list(TRACEABLE)}")
    v = {key: c[key] for key in TRACEABLE if "." not in key}
    v["schedule.alpha"] = c["schedule"]["alpha"]
    v.update(values)
    return v


def _scale_by_learning_rate_scale(learning_rate_scale: float) -> optax.GradientTransformation:
    """``u ← learning_rate_scale · u`` (named so the injected hyperparameter has this name)."""
    return optax.scale(learning_rate_scale)


# ------------------------------------------------------------------------ named factories
def sgd(
    learning_rate: LearningRate = 0.01, momentum: float = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    """SGD, Keras' defaults (lr 0.01, no momentum).

    ``u = −lr·g``; with momentum μ: ``v ← μv + g``, ``u = −lr·v``; Nesterov: ``u = −lr·(g + μv)``
    with the new ``v``.

    Example::

        tx = sgd(0.1, momentum=0.9, nesterov=True)
    """
    return build(
        {"name": "sgd", "learning_rate": learning_rate, "momentum": momentum, "nesterov": nesterov},
        steps_per_epoch=1,
    )


def adam(
    learning_rate: LearningRate = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> optax.GradientTransformation:
    """Adam with Keras' defaults (ε = 1e-7), optax's form of the step.

    ``m ← b1·m + (1−b1)g``, ``v ← b2·v + (1−b2)g²``, ``m̂ = m/(1−b1ᵗ)``, ``v̂ = v/(1−b2ᵗ)``,
    ``u = −lr·m̂/(√v̂ + ε)``. (Keras adds ε to the uncorrected ``√v``, i.e. ε·√(1−b2ᵗ) here; the
    two differ only where ``√v̂`` is comparable to ε.)

    Example::

        tx = adam(3e-4)
    """
    return build(
        {"name": "adam", "learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps},
        steps_per_epoch=1,
    )


def adamw(
    learning_rate: LearningRate = 1e-3,
    weight_decay: float = _KERAS_ADAMW_WEIGHT_DECAY,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-7,
) -> optax.GradientTransformation:
    """AdamW: Adam's step plus decoupled weight decay on kernels only (Keras' default 4e-3).

    ``u = −lr·(m̂/(√v̂ + ε) + weight_decay·w)`` on kernels, Adam's step elsewhere.

    Example::

        tx = adamw(1e-3, weight_decay=1e-2)
    """
    return build(
        {
            "name": "adamw",
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "b1": b1,
            "b2": b2,
            "eps": eps,
        },
        steps_per_epoch=1,
    )


def rmsprop(
    learning_rate: LearningRate = 1e-3, decay: float = 0.9, eps: float = 1e-7, momentum: float = 0.0
) -> optax.GradientTransformation:
    """RMSprop in Keras 3's form (``decay`` is Keras' ``rho``, the config key ``rho``).

    ``v ← decay·v + (1−decay)g²``, ``s = g/√(v + ε)``; without momentum ``u = −lr·s``, with
    momentum μ: ``m ← μm + s``, ``u = −lr·m``.

    Example::

        tx = rmsprop(1e-3, momentum=0.9)
    """
    return build(
        {
            "name": "rmsprop",
            "learning_rate": learning_rate,
            "rho": decay,
            "eps": eps,
            "momentum": momentum,
        },
        steps_per_epoch=1,
    )


def adagrad(
    learning_rate: LearningRate = 1e-3, initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> optax.GradientTransformation:
    """Adagrad in Keras' form: ``a ← a + g²`` (``a`` starts at 0.1), ``u = −lr·g/√(a + ε)``.

    Example::

        tx = adagrad(0.01)
    """
    return build(
        {
            "name": "adagrad",
            "learning_rate": learning_rate,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
        },
        steps_per_epoch=1,
    )


# --------------------------------------------------------------------------------- freeze
def _matches(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _check_prefixes(params: Any, frozen: Sequence[str]) -> None:
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for prefix in frozen:
        if not any(_matches(p, prefix) for p in paths):
            top = sorted({p.split("/", 1)[0] for p in paths})
            raise ValueError(
                f"optimizer.freeze: expected path prefixes of parameters; {prefix!r} matches no "
                f"parameter; top-level names: {top}"
            )


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]) -> optax.GradientTransformation:
    """Zero updates for the parameters under the path prefixes in ``frozen``, ``tx`` for the rest.

    A parameter's path joins its keys with ``/`` (``"Conv_0/kernel"``); a prefix matches whole
    components (``"Dense_1"`` matches ``"Dense_1/bias"``, not ``"Dense_10/bias"``). Built from
    ``optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)``, so frozen
    parameters keep no optimizer state and get no L2 or weight decay.

    Raises:
      ValueError: at ``init`` (or ``build(..., params=...)``) when a prefix matches no parameter,
        listing the top-level parameter names.

    Example::

        tx = freeze(adam(1e-4), ["Conv_0", "Conv_1"])  # fine-tune only the head
    """
    if isinstance(frozen, str):
        frozen = (frozen,)
    frozen = tuple(frozen)
    if not frozen:
        raise ValueError("frozen: expected at least one parameter path prefix; got none")

    def labels(params: Any) -> Any:
        _check_prefixes(params, frozen)

        def label(path: Sequence[Any], _: Any) -> str:
            s = path_str(path)
            return "frozen" if any(_matches(s, f) for f in frozen) else "trainable"

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


# ------------------------------------------------------------------- reading the state
def _is_inject(node: Any) -> bool:
    return isinstance(node, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState)


def _injected(opt_state: Any, key: str) -> list[Any]:
    nodes = jax.tree_util.tree_leaves(opt_state, is_leaf=_is_inject)
    return [n for n in nodes if _is_inject(n) and key in n.hyperparams]


def get_learning_rate_scale(opt_state: Any) -> jax.Array:
    """The ``learning_rate_scale`` in the state: 1.0 unless changed (by ReduceLROnPlateau).

    Returns 1.0 for optimizers without one (a user's own optax transformation). Jit-able.

    Example::

        get_learning_rate_scale(set_learning_rate_scale(opt_state, 0.5))  # 0.5
    """
    found = _injected(opt_state, "learning_rate_scale")
    if not found:
        return jnp.asarray(1.0, jnp.float32)
    return found[0].hyperparams["learning_rate_scale"]


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The effective learning rate ``schedule(t) · learning_rate_scale`` of the latest update.

    Finds the injected ``learning_rate`` wherever it sits (inside chain, MultiSteps,
    multi_transform / freeze, masked states). ``optax.inject_hyperparams`` stores the value the
    last update used: after ``n ≥ 1`` applied updates this is ``schedule(n − 1)``, before the first
    it is ``schedule(0)``; with gradient accumulation the value changes only when an update is
    applied. Logged at an epoch's end, it is the rate of the epoch's last step. Jit-able.

    Returns NaN (a float32 scalar) for a state with no injected ``learning_rate`` (a user's own
    optax transformation such as ``optax.adam(1e-3)``), so logging never fails.

    Example::

        tx = build({"name": "sgd", "learning_rate": 0.1}, steps_per_epoch=10)
        current_learning_rate(tx.init(params))  # 0.1
    """
    found = _injected(opt_state, "learning_rate")
    if not found:
        return jnp.asarray(jnp.nan, jnp.float32)
    return found[0].hyperparams["learning_rate"] * get_learning_rate_scale(opt_state)


def set_learning_rate_scale(opt_state: Any, value: float | jax.Array) -> Any:
    """Returns ``opt_state`` with ``learning_rate_scale = value``; every later update is × value.

    A pure tree update that keeps each leaf's shape, dtype and sharding, so the jitted train
    step runs on without recompiling. ``current_learning_rate`` reflects it at once.

    Raises:
      ValueError: when the state has no ``learning_rate_scale`` (a user's own optax chain).

    Example::

        opt_state = set_learning_rate_scale(opt_state, 0.1 * get_learning_rate_scale(opt_state))
    """
    if not _injected(opt_state, "learning_rate_scale"):
        raise ValueError(
            "opt_state: expected a jaxnn.optim chain with a learning_rate_scale; this optimizer "
            "has none (build it with jaxnn.optim.build to use ReduceLROnPlateau)"
        )

    def replace(node: Any) -> Any:
        if _is_inject(node) and "learning_rate_scale" in node.hyperparams:
            old = node.hyperparams["learning_rate_scale"]
            # full_like keeps dtype, weak type and (for concrete arrays) the sharding.
            hyperparams = {**node.hyperparams, "learning_rate_scale": jnp.full_like(old, value)}
            return node._replace(hyperparams=hyperparams)
        return node

    return jax.tree_util.tree_map(replace, opt_state, is_leaf=_is_inject)
