import jax
import jax.numpy as jnp
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


def two_updates(config):
    tx = optim.build(config, steps_per_epoch=10, epochs=1)
    state = tx.init(PARAMS)
    updates = []
    for g in GRADS:
        u, state = tx.update(g, state, PARAMS)
        updates.append(u)
    return updates


def sgd_formula(lr, momentum=0.0, nesterov=False):
    out, v = [], 0.0
    for g in GRADS:
        g = g["Dense_0"]["kernel"]
        v = momentum * v + g
        out.append(-lr * (momentum * v + g if nesterov else v))
    return out


def adam_formula(lr, b1=0.9, b2=0.999, eps=1e-7, weight_decay=0.0, w=None):
    out, m, v = [], 0.0, 0.0
    for t, g in enumerate(GRADS, start=1):
        g = g["Dense_0"]["kernel"]
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(-lr * (step + (weight_decay * w if weight_decay else 0.0)))
    return out


def rmsprop_formula(lr, rho=0.9, eps=1e-7):
    out, v = [], 0.0
    for g in GRADS:
        g = g["Dense_0"]["kernel"]
        v = rho * v + (1 - rho) * g * g
        out.append(-lr * g / (np.sqrt(v) + eps))
    return out


def adagrad_formula(lr, initial=0.1, eps=1e-7):
    out, a = [], initial
    for g in GRADS:
        g = g["Dense_0"]["kernel"]
        a = a + g * g
        out.append(-lr * g / np.sqrt(a + eps))
    return out


W = PARAMS["Dense_0"]["kernel"]


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"name": "sgd", "learning_rate": 0.1}, sgd_formula(0.1)),
        ({"name": "momentum", "learning_rate": 0.1}, sgd_formula(0.1, 0.9)),
        ({"name": "nesterov", "learning_rate": 0.1}, sgd_formula(0.1, 0.9, nesterov=True)),
        ({"name": "adam", "learning_rate": 0.01}, adam_formula(0.01)),
        (
            {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1},
            adam_formula(0.01, weight_decay=0.1, w=W),
        ),
        ({"name": "rmsprop", "learning_rate": 0.01}, rmsprop_formula(0.01)),
        ({"name": "adagrad", "learning_rate": 0.1}, adagrad_formula(0.1)),
    ],
)
def test_first_two_updates_match_the_formulas(config, expected):
    updates = two_updates(config)
    for got, want in zip(updates, expected, strict=True):
        np.testing.assert_allclose(got["Dense_0"]["kernel"], want, rtol=1e-4, atol=1e-8)


def test_l2_penalty_and_its_gradient_touch_kernels_only():
    l2 = 0.01
    expected = l2 * np.sum(W**2)
    assert float(optim.l2_penalty(PARAMS, l2)) == pytest.approx(expected, rel=1e-6)
    zero = jax.tree_util.tree_map(np.zeros_like, PARAMS)
    tx = optim.build({"name": "sgd", "learning_rate": 1.0, "l2": l2}, steps_per_epoch=1)
    updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
    penalty_grad = jax.grad(optim.l2_penalty)(PARAMS, l2)
    np.testing.assert_allclose(
        updates["Dense_0"]["kernel"], -penalty_grad["Dense_0"]["kernel"], rtol=1e-6
    )
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -2 * l2 * W, rtol=1e-6)
    for leaf in (
        updates["Dense_0"]["bias"],
        updates["BatchNorm_0"]["scale"],
        updates["BatchNorm_0"]["bias"],
    ):
        np.testing.assert_array_equal(leaf, 0.0)


def test_decoupled_weight_decay_is_masked_to_kernels():
    zero = jax.tree_util.tree_map(np.zeros_like, PARAMS)
    tx = optim.build({"name": "sgd", "learning_rate": 0.5, "weight_decay": 0.1}, steps_per_epoch=1)
    updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.5 * 0.1 * W, rtol=1e-6)
    np.testing.assert_array_equal(updates["BatchNorm_0"]["scale"], 0.0)
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)


def rates_after_updates(config, n, steps_per_epoch=4, epochs=5, jit=False):
    tx = optim.build(config, steps_per_epoch=steps_per_epoch, epochs=epochs)
    state = tx.init(PARAMS)
    update = jax.jit(tx.update) if jit else tx.update
    rates = []
    for _ in range(n):  # the rate each update used, read from the state after it
        _, state = update(GRADS[0], state, PARAMS)
        rates.append(float(optim.current_learning_rate(state)))
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
        {"learning_rate": 2.0, "schedule": {"name": "cosine"}}, 21, jit=True
    )
    t = np.arange(21) / 20
    np.testing.assert_allclose(cosine, 2.0 * 0.5 * (1 + np.cos(np.pi * t)), rtol=1e-5, atol=1e-6)
    warm = rates_after_updates(
        {"learning_rate": 1.0, "schedule": {"name": "warmup_cosine", "warmup_epochs": 1}}, 21
    )
    np.testing.assert_allclose(warm[:5], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    assert warm[-1] == pytest.approx(0.0, abs=1e-6)


def test_learning_rate_is_readable_through_wrappers():
    config = {
        "learning_rate": 1.0,
        "freeze": ("BatchNorm_0",),
        "accumulate_steps": 2,
        "schedule": {"name": "step", "decay_factor": 0.1, "decay_every_epochs": 1},
    }
    # 4 steps per epoch with k=2 accumulation: 2 optimizer updates per epoch.
    rates = rates_after_updates(config, 6, jit=True)
    # Mini-steps 2, 4, 6 apply updates 1, 2, 3 (rates s(0), s(1), s(2)); in between the state
    # keeps the last applied update's rate.
    np.testing.assert_allclose(rates, [1.0, 1.0, 1.0, 1.0, 1.0, 0.1], rtol=1e-6)


def test_learning_rate_scale_halves_the_step_without_recompiling():
    tx = optim.build({"name": "sgd", "learning_rate": 0.1}, steps_per_epoch=1)
    traces = []

    @jax.jit
    def update(grads, state):
        traces.append(1)
        return tx.update(grads, state, PARAMS)

    state = tx.init(PARAMS)
    full, state = update(GRADS[0], state)
    state = optim.set_learning_rate_scale(state, 0.5)
    half, state = update(GRADS[0], state)
    np.testing.assert_allclose(
        half["Dense_0"]["kernel"], 0.5 * full["Dense_0"]["kernel"], rtol=1e-6
    )
    assert float(optim.current_learning_rate(state)) == pytest.approx(0.05)
    assert float(optim.get_learning_rate_scale(state)) == 0.5
    assert len(traces) == 1


def test_global_norm_clipping():
    grads = jax.tree_util.tree_map(np.zeros_like, PARAMS)
    grads["Dense_0"]["kernel"] = np.array([[6.0, 0.0], [0.0, 8.0]], np.float32)  # norm 10
    tx = optim.build({"name": "sgd", "learning_rate": 1.0, "clip_norm": 1.0}, steps_per_epoch=1)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -grads["Dense_0"]["kernel"] / 10)


def test_gradient_accumulation_applies_the_mean_every_k_steps():
    tx = optim.build(
        {"name": "sgd", "learning_rate": 1.0, "accumulate_steps": 2}, steps_per_epoch=2
    )
    state = tx.init(PARAMS)
    first, state = tx.update(GRADS[0], state, PARAMS)
    second, state = tx.update(GRADS[1], state, PARAMS)
    np.testing.assert_array_equal(first["Dense_0"]["kernel"], 0.0)
    mean = (GRADS[0]["Dense_0"]["kernel"] + GRADS[1]["Dense_0"]["kernel"]) / 2
    np.testing.assert_allclose(second["Dense_0"]["kernel"], -mean, rtol=1e-6)


def test_freeze_gives_zero_updates_to_the_named_layers():
    tx = optim.build(
        {"name": "sgd", "learning_rate": 1.0, "freeze": ("Dense_0",)}, steps_per_epoch=1
    )
    updates, _ = tx.update(GRADS[0], tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["Dense_0"]["kernel"], 0.0)
    np.testing.assert_array_equal(updates["Dense_0"]["bias"], 0.0)
    np.testing.assert_allclose(updates["BatchNorm_0"]["scale"], -GRADS[0]["BatchNorm_0"]["scale"])
    bad = optim.build({"freeze": ("Conv_9",)}, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"freeze: 'Conv_9' matches no parameter.*Dense_0"):
        bad.init(PARAMS)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "adamm"}, r"optimizer.name: expected one of \[.*'adam'"),
        ({"learning_rat": 0.1}, r"optimizer.learning_rat: unknown.*'learning_rate'"),
        ({"schedule": {"name": "cosin"}}, r"schedule.name: expected one of .*'cosine'"),
        ({"schedule": {"nme": "cosine"}}, r"optimizer.schedule.nme: unknown.*'name'"),
        ({"accumulate_steps": 0}, r"accumulate_steps: expected an integer >= 1; got 0"),
    ],
)
def test_bad_configs_name_the_valid_options(config, message):
    with pytest.raises(ValueError, match=message):
        optim.build(config, steps_per_epoch=1, epochs=1)


def test_user_transformations_without_an_injected_rate_read_as_nan():
    state = optax.sgd(0.1).init(PARAMS)
    assert np.isnan(float(optim.current_learning_rate(state)))
    with pytest.raises(ValueError, match="opt_state: expected a jaxnn.optim chain"):
        optim.set_learning_rate_scale(state, 0.5)
    assert jnp.isfinite(optim.current_learning_rate(optim.adam().init(PARAMS)))
