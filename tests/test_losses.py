"""Losses against numpy formulas, finite differences, weights, the registry and target checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnn import losses

B, C, D = 7, 5, 3


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _cases(rng: np.random.Generator, dtype=np.float32):
    """(name, outputs, targets, numpy per-example formula) for every registered loss."""
    reg_out = rng.normal(size=(B, D)).astype(dtype)
    reg_tgt = rng.normal(size=(B, D)).astype(dtype)
    logit = rng.normal(size=(B,)).astype(dtype) * 3
    soft = rng.uniform(size=(B,)).astype(dtype)
    logits = rng.normal(size=(B, C)).astype(dtype) * 2
    probs = rng.dirichlet(np.ones(C), size=B).astype(dtype)
    labels = rng.integers(0, C, size=B)

    def bce(z, y):
        return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - z * y

    return [
        ("mse", reg_out, reg_tgt, lambda o, t: ((o - t) ** 2).mean(-1)),
        ("mae", reg_out, reg_tgt, lambda o, t: np.abs(o - t).mean(-1)),
        ("binary_crossentropy", logit, soft, bce),
        ("categorical_crossentropy", logits, probs, lambda z, p: -(p * _log_softmax(z)).sum(-1)),
        (
            "sparse_categorical_crossentropy",
            logits,
            labels,
            lambda z, y: -_log_softmax(z)[np.arange(len(y)), y],
        ),
    ]


@pytest.mark.parametrize("index", range(5))
def test_values_match_numpy_formulas(index):
    name, outputs, targets, formula = _cases(np.random.default_rng(0))[index]
    loss = losses.get(name)
    expected = formula(outputs.astype(np.float64), targets)
    np.testing.assert_allclose(loss.per_example(outputs, targets), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss(outputs, targets), expected.mean(), rtol=1e-5, atol=1e-6)


def test_long_names_are_the_same_functions():
    assert losses.get("mean_squared_error") is losses.get("mse")
    assert losses.get("mean_absolute_error") is losses.get("mae")
    o, t = jnp.array([[1.0, 2.0], [0.0, -1.0]]), jnp.zeros((2, 2))
    assert float(losses.mean_squared_error(o, t)) == pytest.approx((1 + 4 + 0 + 1) / 4)
    assert float(losses.mean_absolute_error(o, t)) == pytest.approx((1 + 2 + 0 + 1) / 4)


@pytest.fixture
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("index", range(5))
def test_gradients_match_central_finite_differences(x64, index):
    name, outputs, targets, _ = _cases(np.random.default_rng(1), np.float64)[index]
    if name == "mae":  # keep away from the kink at 0
        outputs = targets + np.sign(outputs - targets) * (0.5 + np.abs(outputs - targets))
    loss = losses.get(name)
    weights = np.random.default_rng(2).uniform(0.5, 1.5, size=B)
    outputs = jnp.asarray(outputs, jnp.float64)
    assert outputs.dtype == jnp.float64

    def f(o):
        return loss(o, jnp.asarray(targets), jnp.asarray(weights))

    grad = np.asarray(jax.grad(f)(outputs))
    eps = 1e-6
    flat = np.asarray(outputs).reshape(-1)
    numeric = np.empty_like(flat)
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = eps
        plus = f(jnp.asarray((flat + step).reshape(outputs.shape)))
        minus = f(jnp.asarray((flat - step).reshape(outputs.shape)))
        numeric[i] = (float(plus) - float(minus)) / (2 * eps)
    np.testing.assert_allclose(grad.reshape(-1), numeric, rtol=1e-6, atol=1e-9)


def test_binary_crossentropy_is_finite_and_correct_at_extreme_logits():
    logits = jnp.array([-100.0, 100.0, -100.0, 100.0])
    targets = jnp.array([1.0, 0.0, 0.0, 1.0])
    per_example = losses.binary_crossentropy_per_example(logits, targets)
    np.testing.assert_allclose(per_example, [100.0, 100.0, 0.0, 0.0], atol=1e-6)
    grad = jax.grad(losses.binary_crossentropy)(logits, targets)
    assert np.all(np.isfinite(grad))
    # d/dz = (sigmoid(z) - y) / B
    np.testing.assert_allclose(grad, [-0.25, 0.25, 0.0, 0.0], atol=1e-7)
    # (B, 1) logits give the same values.
    np.testing.assert_allclose(
        losses.binary_crossentropy(logits[:, None], targets), jnp.mean(per_example)
    )


@pytest.mark.parametrize("index", range(5))
def test_weighted_mean_equals_mean_over_weight_one_examples(index):
    name, outputs, targets, _ = _cases(np.random.default_rng(3))[index]
    loss = losses.get(name)
    weights = np.array([1, 0, 1, 1, 0, 0, 1], np.float32)
    keep = weights == 1
    expected = loss(outputs[keep], targets[keep])
    np.testing.assert_allclose(loss(outputs, targets, weights), expected, rtol=1e-6)
    # A padded example with a huge loss changes nothing.
    np.testing.assert_allclose(
        losses.weighted_mean(jnp.array([1.0, 1e30, 3.0]), jnp.array([1.0, 0.0, 1.0])), 2.0
    )


def test_all_zero_weights_give_zero_and_finite_gradients():
    logits, labels = jnp.ones((3, 4)), jnp.array([0, 1, 2])
    loss = losses.get("sparse_categorical_crossentropy")
    assert float(loss(logits, labels, jnp.zeros(3))) == 0.0
    grad = jax.grad(loss)(logits, labels, jnp.zeros(3))
    np.testing.assert_array_equal(grad, np.zeros((3, 4)))


def test_regression_accepts_flat_targets_for_single_output():
    outputs = jnp.array([[1.0], [2.0], [4.0]])
    targets = jnp.array([0.0, 0.0, 1.0])
    assert float(losses.mean_squared_error(outputs, targets)) == pytest.approx((1 + 4 + 9) / 3)
    with pytest.raises(ValueError, match=r"^targets: expected .*shape \(3, 1\).*; got \(3, 2\)"):
        losses.mean_squared_error(outputs, jnp.zeros((3, 2)))


def test_sparse_accepts_column_labels():
    logits = jnp.asarray(np.random.default_rng(4).normal(size=(4, 3)), jnp.float32)
    labels = jnp.array([0, 2, 1, 1])
    np.testing.assert_allclose(
        losses.sparse_categorical_crossentropy(logits, labels[:, None]),
        losses.categorical_crossentropy(logits, jax.nn.one_hot(labels, 3)),
        rtol=1e-6,
    )


def test_registry_and_loss_fields():
    sparse = losses.get("sparse_categorical_crossentropy")
    assert (sparse.target_kind, sparse.task) == ("int_labels", "multiclass")
    np.testing.assert_allclose(sparse.output_activation(jnp.zeros((1, 4))), [[0.25] * 4])
    binary = losses.get("binary_crossentropy")
    assert (binary.target_kind, binary.task) == ("binary", "binary")
    assert float(binary.output_activation(jnp.array(0.0))) == 0.5
    assert losses.get("categorical_crossentropy").target_kind == "one_hot"
    mse = losses.get("mse")
    assert (mse.target_kind, mse.task) == ("real", "regression")
    assert float(mse.output_activation(jnp.array(3.0))) == 3.0
    assert losses.get(mse) is mse
    with pytest.raises(dataclasses.FrozenInstanceError):
        mse.name = "other"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="^loss: unknown name 'hinge'; expected one of") as info:
        losses.get("hinge")
    for name in ("mse", "mae", "binary_crossentropy", "sparse_categorical_crossentropy"):
        assert name in str(info.value)
    with pytest.raises(TypeError, match="^loss: expected a loss name.*; got int"):
        losses.get(3)


def test_user_callable_is_wrapped_as_regression():
    def huber(outputs, targets):
        x = outputs - targets
        return jnp.sum(jnp.where(jnp.abs(x) < 1, 0.5 * x**2, jnp.abs(x) - 0.5), axis=-1)

    loss = losses.get(huber)
    assert (loss.name, loss.task, loss.target_kind) == ("huber", "regression", "real")
    assert float(loss.output_activation(jnp.array(2.0))) == 2.0
    value = loss(jnp.array([[0.5], [3.0]]), jnp.zeros((2, 1)), jnp.array([1.0, 0.0]))
    assert float(value) == pytest.approx(0.125)


# label smoothing --------------------------------------------------------------------------------


def _smoothed_numpy(logits: np.ndarray, one_hot: np.ndarray, alpha: float) -> np.ndarray:
    """-sum_c y'_c log softmax(z)_c with y' = (1 - alpha) y + alpha / C, in float64."""
    targets = (1 - alpha) * one_hot + alpha / one_hot.shape[-1]
    return -(targets * _log_softmax(logits.astype(np.float64))).sum(-1)


@pytest.mark.parametrize("classes, alpha", [(2, 0.1), (5, 0.1), (11, 0.35), (5, 0.9)])
def test_smoothed_crossentropy_matches_the_numpy_formula(classes, alpha):
    rng = np.random.default_rng(classes)
    logits = (rng.normal(size=(B, classes)) * 3).astype(np.float32)
    labels = rng.integers(0, classes, size=B)
    one_hot = np.eye(classes, dtype=np.float32)[labels]
    expected = _smoothed_numpy(logits, one_hot, alpha)
    sparse = losses.get("sparse_categorical_crossentropy", label_smoothing=alpha)
    categorical = losses.get("categorical_crossentropy", label_smoothing=alpha)
    np.testing.assert_allclose(sparse.per_example(logits, labels), expected, rtol=1e-5)
    np.testing.assert_allclose(sparse.per_example(logits, labels[:, None]), expected, rtol=1e-5)
    np.testing.assert_allclose(categorical.per_example(logits, one_hot), expected, rtol=1e-5)
    # Soft targets are smoothed the same way (Keras): y' = (1 - alpha) y + alpha / C.
    soft = rng.dirichlet(np.ones(classes), size=B).astype(np.float32)
    np.testing.assert_allclose(
        categorical.per_example(logits, soft), _smoothed_numpy(logits, soft, alpha), rtol=1e-5
    )
    # The sparse and one-hot forms agree, weights included; smoothing changes the value.
    weights = np.array([1, 0, 2, 1, 1, 0, 1], np.float32)
    np.testing.assert_allclose(
        sparse(logits, labels, weights), categorical(logits, one_hot, weights), rtol=1e-6
    )
    unsmoothed = losses.get("sparse_categorical_crossentropy")(logits, labels)
    assert abs(float(sparse(logits, labels)) - float(unsmoothed)) > 1e-3


def test_smoothed_binary_crossentropy_uses_keras_targets():
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(B,)) * 3).astype(np.float64)
    y = rng.integers(0, 2, size=B).astype(np.float64)
    alpha = 0.2
    target = y * (1 - alpha) + 0.5 * alpha
    expected = np.log1p(np.exp(-np.abs(logits))) + np.maximum(logits, 0) - logits * target
    loss = losses.get("binary_crossentropy", label_smoothing=alpha)
    np.testing.assert_allclose(loss.per_example(logits.astype(np.float32), y), expected, rtol=1e-5)
    np.testing.assert_allclose(loss.per_example(logits[:, None], y[:, None]), expected, rtol=1e-5)


def test_smoothed_gradient_is_softmax_minus_smoothed_targets(x64):
    rng = np.random.default_rng(6)
    classes, alpha = 6, 0.15
    logits = jnp.asarray(rng.normal(size=(B, classes)) * 2, jnp.float64)
    labels = jnp.asarray(rng.integers(0, classes, size=B))
    loss = losses.get("sparse_categorical_crossentropy", label_smoothing=alpha)
    grad = np.asarray(jax.grad(loss)(logits, labels))
    assert grad.dtype == np.float64
    targets = (1 - alpha) * np.eye(classes)[np.asarray(labels)] + alpha / classes
    softmax = np.exp(_log_softmax(np.asarray(logits)))
    # d/dz of the mean over B examples of -sum_c y'_c log softmax(z)_c.
    np.testing.assert_allclose(grad, (softmax - targets) / B, rtol=1e-12, atol=1e-15)


def test_smoothing_keeps_the_loss_identity_and_zero_returns_the_registry_object():
    for name in losses.names():
        assert losses.get(name, label_smoothing=0.0) is losses.get(name)
        assert losses.get(name, label_smoothing=0) is losses.get(name)
    base = losses.get("sparse_categorical_crossentropy")
    smoothed = losses.get("sparse_categorical_crossentropy", label_smoothing=0.1)
    assert smoothed is losses.get("sparse_categorical_crossentropy", label_smoothing=0.1)
    assert smoothed is not base and smoothed != base
    assert (smoothed.name, smoothed.task, smoothed.target_kind) == (
        "sparse_categorical_crossentropy",
        "multiclass",
        "int_labels",
    )
    assert smoothed.output_activation is base.output_activation
    assert (smoothed.label_smoothing, base.label_smoothing) == (0.1, 0.0)
    assert losses.get(smoothed) is smoothed  # a Loss passes through, as before
    # float32 or float64 numpy scalars are real numbers too.
    assert losses.get("categorical_crossentropy", label_smoothing=np.float64(0.2)) is (
        losses.get("categorical_crossentropy", label_smoothing=0.2)
    )


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_label_smoothing_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a real number in \[0, 1\)"):
        losses.get("sparse_categorical_crossentropy", label_smoothing=value)


def test_label_smoothing_without_classes_is_refused():
    with pytest.raises(
        ValueError,
        match=r"^label_smoothing: expected 0 for the regression loss 'mse'.*; got 0\.1$",
    ):
        losses.get("mean_squared_error", label_smoothing=0.1)
    own = r"^label_smoothing: expected 0 for a Loss or callable"
    for loss in (losses.get(SPARSE), losses.mean_absolute_error_per_example):
        with pytest.raises(ValueError, match=own):
            losses.get(loss, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"^label_smoothing: expected a real number"):
        dataclasses.replace(losses.get("mse"), label_smoothing=-1.0)
    assert losses.get("mae", label_smoothing=0.0) is losses.get("mae")


# check_targets --------------------------------------------------------------------------------


def _check(name, y, num_outputs):
    losses.check_targets(losses.get(name), np.asarray(y), num_outputs)


def test_check_targets_accepts_good_targets():
    _check("sparse_categorical_crossentropy", [0, 1, 2], 3)
    _check("sparse_categorical_crossentropy", [[0], [2]], 3)
    _check("categorical_crossentropy", np.eye(3, dtype=np.float32), 3)
    _check("binary_crossentropy", [0.0, 1.0, 0.3], 1)
    _check("binary_crossentropy", [[0], [1]], 1)
    _check("mse", np.zeros((4, 2)), 2)
    _check("mae", np.zeros(4), 1)


SPARSE, CATEGORICAL, BINARY = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
)


@pytest.mark.parametrize(
    "name, y, num_outputs, pattern",
    [
        (SPARSE, [0, 3, 1], 3, r"^y: expected labels in \[0, 3\).*; got 3 at index 1"),
        (SPARSE, [0, -1], 3, r"^y: expected labels in \[0, 3\).*; got -1 at index 1"),
        (SPARSE, np.eye(3), 3, r"^y: expected integer.*one-hot: use 'categorical_crossentropy'"),
        (SPARSE, [0.0, 1.5], 3, r"^y: expected integer labels.*; got dtype float64"),
        (CATEGORICAL, [0, 2, 1], 3, r"^y: expected one-hot.*'sparse_categorical_crossentropy'"),
        (CATEGORICAL, np.eye(4)[:3], 3, r"^y: expected shape \(3, 3\).*; got \(3, 4\)"),
        (CATEGORICAL, 2 * np.eye(3), 3, r"^y: expected probabilities in \[0, 1\].*; got values"),
        (BINARY, [0.0, 2.0], 1, r"^y: expected values in \[0, 1\].*; got values in \[0.0, 2.0\]"),
        (BINARY, [0.0, 1.0], 2, r"^num_outputs: expected a model with 1 output.*; got 2\."),
        (BINARY, np.zeros((2, 2)), 1, r"^y: expected one target per example.*; got \(2, 2\)"),
        (
            "mse",
            np.zeros((4, 3)),
            2,
            r"^y: expected 2 value\(s\) per example.*; got shape \(4, 3\)",
        ),
        ("mse", [0.0, np.nan], 1, r"^y: expected finite values; got NaN or Inf.*at index 1"),
        (BINARY, [np.inf, 1.0], 1, r"^y: expected finite values; got NaN or Inf.*at index 0"),
        ("mse", 1.0, 1, r"^y: expected .*leading example dimension; got shape \(\)"),
    ],
)
def test_check_targets_errors(name, y, num_outputs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _check(name, y, num_outputs)


def test_check_targets_names_the_argument():
    with pytest.raises(
        ValueError,
        match=r"^val_y: expected labels .* for 'sparse_categorical_crossentropy'.*; got 7",
    ):
        losses.check_targets(
            losses.get("sparse_categorical_crossentropy"), np.array([7]), 3, argument="val_y"
        )
