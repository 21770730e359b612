"""jaxnn.optim against formulas written out in numpy."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxnn import optim

PARAMS = {
    "Dense_0": {
        "kernel": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32),
        "bias": np.array([0.1, -0.2], np.float32),
    },
    "BatchNorm_0": {
        "scale": np.array([1.0, 1.5], np.float32),
        "bias": np.array([0.0, 0.3], np.float32),
    },
}
GRADS = [
    jax.tree_util.tree_map(lambda p: np.float32(0.3) * p + np.float32(0.1), PARAMS),
    jax.tree_util.tree_map(lambda p: np.float32(-0.2) * p + np.float32(0.05), PARAMS),
]
W = PARAMS["Dense_0"]["kernel"]
ZERO = jax.tree_util.tree_map(np.zeros_like, PARAMS)
NOT_KERNELS = (("Dense_0", "bias"), ("BatchNorm_0", "scale"), ("BatchNorm_0", "bias"))


def two_updates(tx, leaf=("Dense_0", "kernel")):
    state = tx.init(PARAMS)
    out = []
    for g in GRADS:
        u, state = tx.update(g, state, PARAMS)
        out.append(u[leaf[0]][leaf[1]])
    return out


def grads_of(leaf):
    return [g[leaf[0]][leaf[1]].astype(np.float64) for g in GRADS]


def sgd_formula(lr, momentum=0.0, nesterov=False, leaf=("Dense_0", "kernel")):
    out, v = [], 0.0
    for g in grads_of(leaf):
        v = momentum * v + g
        out.append(-lr * (momentum * v + g if nesterov else v))
    return out


def adam_formula(lr, b1=0.9, b2=0.999, eps=1e-7, weight_decay=0.0, leaf=("Dense_0", "kernel")):
    w = PARAMS[leaf[0]][leaf[1]]
    out, m, v = [], 0.0, 0.0
    for t, g in enumerate(grads_of(leaf), start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(-lr * (step + weight_decay * w))
    return out


def rmsprop_formula(lr, rho=0.9, eps=1e-7, momentum=0.0):
    out, v, mom = [], 0.0, 0.0
    for g in grads_of(("Dense_0", "kernel")):
        v = rho * v + (1 - rho) * g * g
        mom = momentum * mom + g / np.sqrt(v + eps)  # Keras 3: ε inside the root
        out.append(-lr * mom)
    return out


def adagrad_formula(lr, initial=0.1, eps=1e-7):
    out, a = [], initial
    for g in grads_of(("Dense_0", "kernel")):
        a = a + g * g
        out.append(-lr * g / np.sqrt(a + eps))
    return out


FORMULA_CASES = [
    ({"name": "sgd", "learning_rate": 0.1}, sgd_formula(0.1)),
    ({"name": "momentum", "learning_rate": 0.1}, sgd_formula(0.1, 0.9)),
    ({"name": "momentum", "learning_rate": 0.1, "momentum": 0.5}, sgd_formula(0.1, 0.5)),
    ({"name": "nesterov", "learning_rate": 0.1}, sgd_formula(0.1, 0.9, nesterov=True)),
    ({"name": "adam", "learning_rate": 0.01}, adam_formula(0.01)),
    # A large ε pins where ε goes (after the bias correction, outside the root).
    ({"name": "adam", "learning_rate": 0.01, "eps": 0.1}, adam_formula(0.01, eps=0.1)),
    (
        {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1},
        adam_formula(0.01, weight_decay=0.1),
    ),
    ({"name": "adamw", "learning_rate": 0.01}, adam_formula(0.01, weight_decay=4e-3)),
    ({"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.0}, adam_formula(0.01)),
    ({"name": "rmsprop", "learning_rate": 0.01}, rmsprop_formula(0.01)),
    (
        {"name": "rmsprop", "learning_rate": 0.01, "eps": 0.1, "rho": 0.8},
        rmsprop_formula(0.01, rho=0.8, eps=0.1),
    ),
    (
        {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.9},
        rmsprop_formula(0.01, momentum=0.9),
    ),
    ({"name": "adagrad", "learning_rate": 0.1}, adagrad_formula(0.1)),
    ({"name": "adagrad", "learning_rate": 0.1, "eps": 0.1}, adagrad_formula(0.1, eps=0.1)),
]


@pytest.mark.parametrize("config, expected", FORMULA_CASES)
def test_first_two_updates_match_the_formulas(config, expected):
    tx = optim.build(config, steps_per_epoch=10, epochs=1)
    for got, want in zip(two_updates(tx), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "tx, expected",
    [
        (optim.sgd(0.1, momentum=0.9, nesterov=True), sgd_formula(0.1, 0.9, nesterov=True)),
        (optim.adam(0.01, b1=0.8, b2=0.99, eps=0.1), adam_formula(0.01, 0.8, 0.99, 0.1)),
        (optim.adamw(0.01, weight_decay=0.1), adam_formula(0.01, weight_decay=0.1)),
        (optim.rmsprop(0.01, decay=0.8, eps=0.1), rmsprop_formula(0.01, rho=0.8, eps=0.1)),
        (optim.adagrad(0.1, initial_accumulator_value=0.5), adagrad_formula(0.1, initial=0.5)),
    ],
)
def test_named_factories_match_the_formulas(tx, expected):
    for got, want in zip(two_updates(tx), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_adamw_decays_kernels_only():
    tx = optim.adamw(0.01, weight_decay=0.1)
    for leaf in NOT_KERNELS:
        expected = adam_formula(0.01, leaf=leaf)  # no decay term
        for got, want in zip(two_updates(tx, leaf), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_kernel_mask_marks_only_kernels():
    assert optim.kernel_mask(PARAMS) == {
        "Dense_0": {"kernel": True, "bias": False},
        "BatchNorm_0": {"scale": False, "bias": False},
    }


def test_l2_penalty_and_its_gradient_touch_kernels_only():
    l2 = 0.01
    params = {**PARAMS, "Conv_0": {"kernel": np.full((3, 3, 1, 2), 0.5, np.float32)}}
    expected = l2 * (np.sum(W.astype(np.float64) ** 2) + 18 * 0.25)
    assert float(optim.l2_penalty(params, l2)) == pytest.approx(expected, rel=1e-6)

    tx = optim.build({"name": "sgd", "learning_rate": 1.0, "l2": l2}, steps_per_epoch=1)
    # The L2 piece alone: what it adds to a zero gradient, before any scaling.
    l2_piece = optax.add_decayed_weights(2 * l2, mask=optim.kernel_mask)
    zero = jax.tree_util.tree_map(np.zeros_like, params)
    added, _ = l2_piece.update(zero, l2_piece.init(params), params)
    updates, _ = tx.update(zero, tx.init(params), params)
    penalty_grad = jax.grad(optim.l2_penalty)(params, l2)
    for layer in ("Dense_0", "Conv_0"):
        np.testing.assert_allclose(added[layer]["kernel"], penalty_grad[layer]["kernel"], rtol=1e-6)
        np.testing.assert_allclose(updates[layer]["kernel"], -penalty_grad[layer]["kernel"])
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -2 * l2 * W, rtol=1e-6)
    for layer, name in NOT_KERNELS:
        np.testing.assert_array_equal(updates[layer][name], 0.0)


def test_l2_goes_before_the_optimizer_scaling():
    # With Adam, L2's 2λw is normalised with the gradient: a zero gradient plus L2 moves kernels
    # by lr·sign(w) on the first step (m̂/√v̂ = ±1), not by lr·2λw.
    tx = optim.build({"name": "adam", "learning_rate": 0.01, "l2": 0.01}, steps_per_epoch=1)
    updates, _ = tx.update(ZERO, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.01 * np.sign(W), rtol=1e-4)
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)


def test_decoupled_weight_decay_is_masked_and_scaled_by_the_learning_rate():
    tx = optim.build({"name": "adam", "learning_rate": 0.5, "weight_decay": 0.1}, steps_per_epoch=1)
    updates, _ = tx.update(ZERO, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.5 * 0.1 * W, rtol=1e-6)
    for layer, name in NOT_KERNELS:
        np.testing.assert_array_equal(updates[layer][name], 0.0)


def rates_after_updates(config, n, steps_per_epoch=4, epochs=5, jit=False):
    tx = optim.build(config, steps_per_epoch=steps_per_epoch, epochs=epochs)
    state = tx.init(PARAMS)
    update = jax.jit(tx.update) if jit else tx.update
    read = jax.jit(optim.current_learning_rate) if jit else optim.current_learning_rate
    rates = []
    for _ in range(n):  # the rate each update used, read from the state after it
        _, state = update(GRADS[0], state, PARAMS)
        rates.append(float(read(state)))
    return rates


def test_schedules_in_epochs_match_their_formulas():
    step = rates_after_updates(
        {
            "learning_rate": 1.0,
            "schedule": {"name": "step", "decay_factor": 0.5, "decay_every_epochs": 2},
        },
        17,
    )
    np.testing.assert_allclose(step, [1.0] * 8 + [0.5] * 8 + [0.25], rtol=1e-6)
    expo = rates_after_updates(
        {
            "learning_rate": 1.0,
            "schedule": {"name": "exponential", "decay_rate": 0.5, "decay_epochs": 1},
        },
        6,
    )
    np.testing.assert_allclose(expo, 0.5 ** (np.arange(6) / 4), rtol=1e-6)
    cosine = rates_after_updates(
        {"learning_rate": 2.0, "schedule": {"name": "cosine", "alpha": 0.1}}, 21, jit=True
    )
    t = np.arange(21) / 20
    np.testing.assert_allclose(
        cosine, 2.0 * (0.9 * 0.5 * (1 + np.cos(np.pi * t)) + 0.1), rtol=1e-5, atol=1e-6
    )
    warm = rates_after_updates(
        {"learning_rate": 1.0, "schedule": {"name": "warmup_cosine", "warmup_epochs": 1}}, 21
    )
    np.testing.assert_allclose(warm[:5], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    t = (np.arange(4, 21) - 4) / 16
    np.testing.assert_allclose(warm[4:], 0.5 * (1 + np.cos(np.pi * t)), atol=1e-6)
    assert warm[-1] == pytest.approx(0.0, abs=1e-6)


def test_make_schedule_steps_at_epoch_boundaries():
    spe = 7
    s = optim.make_schedule(
        0.1,
        {"name": "step", "decay_factor": 0.3, "decay_every_epochs": 3},
        steps_per_epoch=spe,
    )
    for epoch in (3, 6, 9):
        boundary = epoch * spe
        assert float(s(boundary - 1)) == pytest.approx(0.1 * 0.3 ** (epoch // 3 - 1), rel=1e-6)
        assert float(s(boundary)) == pytest.approx(0.1 * 0.3 ** (epoch // 3), rel=1e-6)
    assert optim.make_schedule(0.2, None, steps_per_epoch=spe) == 0.2
    warm = optim.make_schedule(
        1.0,
        {"name": "warmup_cosine", "warmup_epochs": 2, "total_epochs": 10, "alpha": 0.1},
        steps_per_epoch=spe,
    )
    assert float(warm(0)) == 0.0
    assert float(warm(2 * spe)) == pytest.approx(1.0)
    assert float(warm(10 * spe)) == pytest.approx(0.1)


def test_learning_rate_is_readable_through_multisteps_and_freeze_inside_jit():
    config = {
        "learning_rate": 1.0,
        "freeze": ("BatchNorm_0",),
        "accumulate_steps": 2,
        "schedule": {"name": "step", "decay_factor": 0.1, "decay_every_epochs": 1},
    }
    # 4 steps per epoch with k=2 accumulation: 2 applied updates per epoch. Mini-steps 2, 4, 6
    # apply updates 1, 2, 3 (rates s(0), s(1), s(2)); in between the state keeps the last rate.
    rates = rates_after_updates(config, 6, jit=True)
    np.testing.assert_allclose(rates, [1.0, 1.0, 1.0, 1.0, 1.0, 0.1], rtol=1e-6)


@pytest.mark.parametrize("wrapper", [{"freeze": ["BatchNorm_0"]}, {"accumulate_steps": 3}])
def test_learning_rate_is_readable_through_each_wrapper(wrapper):
    config = {"learning_rate": 0.5, "schedule": {"name": "exponential", "decay_rate": 0.5}}
    rates = rates_after_updates({**config, **wrapper}, 6, steps_per_epoch=6, jit=True)
    k = wrapper.get("accumulate_steps", 1)
    applied = np.maximum(np.arange(1, 7) // k - 1, 0)  # index of the last applied update
    np.testing.assert_allclose(rates, 0.5 * 0.5 ** (applied / (6 / k)), rtol=1e-6)


def test_learning_rate_scale_halves_the_step_without_recompiling():
    tx = optim.build(
        {"name": "sgd", "learning_rate": 0.1, "schedule": {"name": "exponential"}},
        steps_per_epoch=1000,
    )
    traces = []

    def update(grads, state):
        traces.append(1)
        return tx.update(grads, state, PARAMS)

    update = jax.jit(update)
    state = tx.init(PARAMS)
    _, state = update(GRADS[0], state)
    full, state = update(GRADS[0], state)
    lr = float(optim.current_learning_rate(state))
    state = optim.set_learning_rate_scale(state, 0.5)
    assert float(optim.get_learning_rate_scale(state)) == 0.5
    assert float(optim.current_learning_rate(state)) == pytest.approx(0.5 * lr, rel=1e-7)
    half, state = update(GRADS[0], state)
    schedule_ratio = 0.96 ** (1 / 1000)  # one more step of the exponential schedule
    np.testing.assert_allclose(
        half["Dense_0"]["kernel"], 0.5 * schedule_ratio * full["Dense_0"]["kernel"], rtol=1e-6
    )
    state = optim.set_learning_rate_scale(state, 1.0)
    again, state = update(GRADS[0], state)
    np.testing.assert_allclose(
        again["Dense_0"]["kernel"], schedule_ratio * half["Dense_0"]["kernel"] / 0.5, rtol=1e-6
    )
    assert len(traces) == 1
    assert update._cache_size() == 1


def test_global_norm_clipping():
    grads = jax.tree_util.tree_map(np.zeros_like, PARAMS)
    grads["Dense_0"]["kernel"] = np.array([[6.0, 0.0], [0.0, 8.0]], np.float32)  # norm 10
    tx = optim.build({"name": "sgd", "learning_rate": 1.0, "clip_norm": 1.0}, steps_per_epoch=1)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -grads["Dense_0"]["kernel"] / 10)
    tx = optim.build({"name": "sgd", "learning_rate": 1.0, "clip_norm": 20.0}, steps_per_epoch=1)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["Dense_0"]["kernel"], -grads["Dense_0"]["kernel"])


def test_gradient_accumulation_applies_the_mean_every_k_steps():
    grads = GRADS + [jax.tree_util.tree_map(lambda g: np.float32(2.0) * g, GRADS[0])]
    tx = optim.build(
        {"name": "sgd", "learning_rate": 1.0, "accumulate_steps": 3}, steps_per_epoch=3
    )
    state = tx.init(PARAMS)
    for g in grads[:2]:
        updates, state = tx.update(g, state, PARAMS)
        for leaf in jax.tree_util.tree_leaves(updates):
            np.testing.assert_array_equal(leaf, 0.0)
    updates, state = tx.update(grads[2], state, PARAMS)
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / 3, *grads)
    for got, want in zip(
        jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(mean), strict=True
    ):
        np.testing.assert_allclose(got, -want, rtol=1e-6)


def test_freeze_gives_zero_updates_to_the_named_layers():
    params = {**PARAMS, "Dense_10": {"kernel": np.ones((2, 2), np.float32)}}
    grads = {**GRADS[0], "Dense_10": {"kernel": np.ones((2, 2), np.float32)}}
    tx = optim.build(
        {"name": "momentum", "learning_rate": 1.0, "freeze": ("Dense_0",)}, steps_per_epoch=1
    )
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["Dense_0"]["kernel"], 0.0)
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)
    np.testing.assert_allclose(updates["BatchNorm_0"]["scale"], -grads["BatchNorm_0"]["scale"])
    np.testing.assert_allclose(updates["Dense_10"]["kernel"], -1.0)  # "Dense_0" ≠ "Dense_10"
    only_bias = optim.freeze(optax.sgd(1.0), ["Dense_0/bias"])
    updates, _ = only_bias.update(grads, only_bias.init(params), params)
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -grads["Dense_0"]["kernel"])


def test_unknown_freeze_prefix_lists_the_top_level_names():
    message = (
        r"freeze: .*'Conv_9' matches no parameter; top-level names: \['BatchNorm_0', 'Dense_0'"
    )
    bad = optim.build({"freeze": ("Conv_9",)}, steps_per_epoch=1)
    with pytest.raises(ValueError, match=message):
        bad.init(PARAMS)
    with pytest.raises(ValueError, match=message):
        optim.build({"freeze": ["Conv_9"]}, steps_per_epoch=1, params=PARAMS)


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"name": "adamm"},
            r"optimizer.name: expected one of \[.*'adam'.*'adagrad'\]; got 'adamm'",
        ),
        (
            {"learning_rat": 0.1},
            r"optimizer.learning_rat: unknown.*did you mean \['learning_rate'\]",
        ),
        ({"schedule": {"name": "cosin"}}, r"schedule.name: expected one of \[.*'warmup_cosine'"),
        ({"schedule": {"nme": "cosine"}}, r"optimizer.schedule.nme: unknown.*'name'"),
        ({"schedule": "cosine"}, r"optimizer.schedule: expected a dict"),
        ({"accumulate_steps": 0}, r"accumulate_steps: expected an integer >= 1; got 0"),
        ({"learning_rate": "fast"}, r"learning_rate: expected a float or an optax schedule"),
        ({"l2": -1.0}, r"optimizer.l2: expected a number >= 0"),
    ],
)
def test_bad_configs_name_the_valid_options(config, message):
    with pytest.raises(ValueError, match=message):
        optim.build(config, steps_per_epoch=1, epochs=1)
    with pytest.raises(ValueError, match=message):
        optim.check_config(config)


def test_cosine_needs_a_length_and_warmup_shorter_than_it():
    optim.check_config({"schedule": {"name": "cosine"}})  # the length is only needed to build
    with pytest.raises(ValueError, match="schedule.total_epochs: .*needs its length"):
        optim.build({"schedule": {"name": "cosine"}}, steps_per_epoch=10)
    with pytest.raises(ValueError, match="warmup_epochs: expected fewer warmup epochs"):
        optim.build(
            {"schedule": {"name": "warmup_cosine", "warmup_epochs": 5}},
            steps_per_epoch=10,
            epochs=5,
        )
    with pytest.raises(ValueError, match=r"steps_per_epoch: expected an integer >= 1; got 0"):
        optim.build({}, steps_per_epoch=0)


def test_default_config_builds_and_accepts_a_config_dict():
    config = optim.default_config()
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.name == "adam" and config.eps == 1e-7 and config.accumulate_steps == 1
    config.name = "momentum"
    config.learning_rate = 0.1
    tx = optim.build(config, steps_per_epoch=1)
    for got, want in zip(two_updates(tx), sgd_formula(0.1, 0.9), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_schedule_can_be_passed_as_the_learning_rate():
    tx = optim.build(
        {"name": "sgd", "learning_rate": lambda count: 0.1 / (1 + count)}, steps_per_epoch=1
    )
    state = tx.init(PARAMS)
    for expected in (0.1, 0.05, 0.1 / 3):
        _, state = tx.update(GRADS[0], state, PARAMS)
        assert float(optim.current_learning_rate(state)) == pytest.approx(expected)


def test_user_transformations_without_an_injected_rate_read_as_nan():
    state = optax.sgd(0.1).init(PARAMS)
    assert np.isnan(float(optim.current_learning_rate(state)))
    assert float(optim.get_learning_rate_scale(state)) == 1.0
    with pytest.raises(ValueError, match="opt_state: expected a jaxnn.optim chain"):
        optim.set_learning_rate_scale(state, 0.5)
    assert float(optim.current_learning_rate(optim.adam().init(PARAMS))) == pytest.approx(1e-3)
    assert jnp.isfinite(optim.current_learning_rate(optim.adagrad(0.01).init(PARAMS)))


def test_check_config_returns_the_complete_config_build_uses():
    defaults = optim.default_config().to_dict()
    c = optim.check_config({"name": "nesterov", "learning_rate": 1, "freeze": "Dense_0"})
    assert set(c) == set(defaults)
    assert c["momentum"] == 0.9 and c["nesterov"] is True and c["weight_decay"] == 0.0
    assert c["learning_rate"] == 1.0 and isinstance(c["learning_rate"], float)
    assert c["freeze"] == ("Dense_0",)
    assert c["schedule"] == defaults["schedule"]
    assert optim.check_config(c) == c
    adamw = optim.check_config({"name": "adamw", "schedule": {"name": "cosine"}})
    assert adamw["weight_decay"] == 4e-3 and adamw["momentum"] == 0.0
    assert adamw["schedule"] == {**defaults["schedule"], "name": "cosine"}
    none = optim.check_config({"l2": None, "clip_norm": None, "schedule": {"total_epochs": None}})
    assert none["l2"] == none["clip_norm"] == none["schedule"]["total_epochs"] == 0
    for config in ({"name": "adamw", "learning_rate": 0.01}, {"name": "momentum", "l2": 0.01}):
        raw = two_updates(optim.build(config, steps_per_epoch=1))
        checked = two_updates(optim.build(optim.check_config(config), steps_per_epoch=1))
        for got, want in zip(checked, raw, strict=True):
            np.testing.assert_array_equal(got, want)


OUT_OF_RANGE = [
    ({"learning_rate": -0.1}, "optimizer.learning_rate: expected a finite number > 0; got -0.1"),
    ({"learning_rate": 0.0}, "optimizer.learning_rate: expected a finite number > 0; got 0.0"),
    ({"learning_rate": 0}, "optimizer.learning_rate: expected a finite number > 0; got 0"),
    (
        {"learning_rate": float("inf")},
        "optimizer.learning_rate: expected a finite number > 0; got inf",
    ),
    (
        {"learning_rate": float("nan")},
        "optimizer.learning_rate: expected a finite number > 0; got nan",
    ),
    ({"momentum": 1.0}, "optimizer.momentum: expected a number in [0, 1); got 1.0"),
    ({"momentum": -0.5}, "optimizer.momentum: expected a number in [0, 1); got -0.5"),
    ({"momentum": "0.9"}, "optimizer.momentum: expected a number in [0, 1); got '0.9'"),
    ({"b1": 1.0}, "optimizer.b1: expected a number in [0, 1); got 1.0"),
    ({"b2": -0.001}, "optimizer.b2: expected a number in [0, 1); got -0.001"),
    ({"b2": None}, "optimizer.b2: expected a number in [0, 1); got None"),
    ({"rho": 1.5}, "optimizer.rho: expected a number in [0, 1); got 1.5"),
    ({"eps": 0.0}, "optimizer.eps: expected a finite number > 0; got 0.0"),
    ({"eps": -1e-7}, "optimizer.eps: expected a finite number > 0; got -1e-07"),
    (
        {"schedule": {"decay_factor": 0.0}},
        "optimizer.schedule.decay_factor: expected a number in (0, 1]; got 0.0",
    ),
    (
        {"schedule": {"decay_factor": 2}},
        "optimizer.schedule.decay_factor: expected a number in (0, 1]; got 2",
    ),
    (
        {"schedule": {"decay_rate": 1.01}},
        "optimizer.schedule.decay_rate: expected a number in (0, 1]; got 1.01",
    ),
    (
        {"schedule": {"decay_rate": -0.5}},
        "optimizer.schedule.decay_rate: expected a number in (0, 1]; got -0.5",
    ),
    (
        {"schedule": {"decay_every_epochs": 0}},
        "optimizer.schedule.decay_every_epochs: expected a finite number > 0; got 0",
    ),
    (
        {"schedule": {"decay_epochs": -1.0}},
        "optimizer.schedule.decay_epochs: expected a finite number > 0; got -1.0",
    ),
    (
        {"schedule": {"warmup_epochs": -1}},
        "optimizer.schedule.warmup_epochs: expected a finite number >= 0; got -1",
    ),
    (
        {"schedule": {"total_epochs": -2}},
        "optimizer.schedule.total_epochs: expected a finite number >= 0; got -2",
    ),
    (
        {"schedule": {"alpha": 1.5}},
        "optimizer.schedule.alpha: expected a number in [0, 1]; got 1.5",
    ),
    (
        {"schedule": {"alpha": -0.1}},
        "optimizer.schedule.alpha: expected a number in [0, 1]; got -0.1",
    ),
]


@pytest.mark.parametrize("config, message", OUT_OF_RANGE)
def test_numbers_out_of_range_are_refused_with_exact_messages(config, message):
    exact = "^" + re.escape(message) + "$"
    with pytest.raises(ValueError, match=exact):
        optim.check_config(config)
    with pytest.raises(ValueError, match=exact):
        optim.build(config, steps_per_epoch=1, epochs=1)


def test_make_schedule_and_the_factories_refuse_the_same_numbers():
    with pytest.raises(ValueError, match=r"^optimizer.learning_rate: .* > 0; got -0.1$"):
        optim.make_schedule(-0.1, None, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"^optimizer.schedule.decay_rate: .*\(0, 1\]; got 0$"):
        optim.make_schedule(0.1, {"name": "exponential", "decay_rate": 0}, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"^optimizer.b1: .*\[0, 1\); got 1.0$"):
        optim.adam(b1=1.0)
    with pytest.raises(ValueError, match=r"^optimizer.rho: .*\[0, 1\); got 1.0$"):
        optim.rmsprop(decay=1.0)
    with pytest.raises(ValueError, match=r"^optimizer.learning_rate: .* > 0; got 0.0$"):
        optim.sgd(0.0)


def test_the_ends_of_each_range_that_make_sense_are_accepted():
    edges = {"momentum": 0.0, "b1": 0.0, "b2": 0, "rho": 0.0, "eps": 1e-30}
    schedule = {
        "decay_factor": 1.0,
        "decay_rate": 1,
        "decay_every_epochs": 0.5,
        "decay_epochs": 1e-3,
        "warmup_epochs": 0,
        "total_epochs": 0,
        "alpha": 1.0,
    }
    for name in optim.OPTIMIZERS:
        optim.build({"name": name, **edges, "schedule": schedule}, steps_per_epoch=1)
    c = optim.check_config({"momentum": np.float32(0.5), "schedule": {"alpha": 0}})
    assert c["momentum"] == 0.5 and c["schedule"]["alpha"] == 0


def test_run_lengths_read_names_what_a_schedule_depends_on():
    def read(config):
        return optim.run_lengths_read(config, steps_per_epoch=469, epochs=10)

    assert read({"name": "adam"}) == ()
    assert read({"name": "sgd", "learning_rate": optax.linear_schedule(0.1, 0.0, 100)}) == ()
    assert read({"schedule": {"name": "step"}}) == (469,)
    assert read({"schedule": {"name": "exponential"}}) == (469,)
    assert read({"schedule": {"name": "cosine", "total_epochs": 5}}) == (469,)
    assert read({"schedule": {"name": "cosine"}}) == (469, 10)
    assert read({"schedule": {"name": "warmup_cosine"}}) == (469, 10)
    # The promise behind it: the same lengths read, the same chain, whatever the others are.
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    grads = jax.tree.map(lambda p: p * 0.5, params)
    config = {"name": "sgd", "learning_rate": 0.1, "schedule": {"name": "step"}}
    updates = []
    for epochs in (10, 99):
        tx = optim.build(config, steps_per_epoch=469, epochs=epochs)
        state = tx.init(params)
        for _ in range(3):
            update, state = tx.update(grads, state, params)
        updates.append(update)
    jax.tree.map(np.testing.assert_array_equal, *updates)
    with pytest.raises(ValueError, match="optimizer.name"):
        read({"name": "adamm"})
