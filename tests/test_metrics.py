"""Metrics: exact over padded batches, order-free merges, formulas, jit, the registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnn import losses
from jaxnn import metrics as metrics_lib
from jaxnn.utils import round_up

N, BATCH, C = 103, 10, 6
NAMES = ("loss", "accuracy", "top_k_accuracy", "top3_accuracy")


def _dataset(seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N, C)).astype(np.float32)
    labels = rng.integers(0, C, size=N).astype(np.int32)
    return logits, labels


def _padded_batches(*arrays):
    """Batches of BATCH examples; the last is padded with zeros and weight 0."""
    padded_n = round_up(N, BATCH)
    weights = np.zeros(padded_n, np.float32)
    weights[:N] = 1
    padded = [np.concatenate([a, np.zeros((padded_n - N, *a.shape[1:]), a.dtype)]) for a in arrays]
    for start in range(0, padded_n, BATCH):
        yield (*(a[start : start + BATCH] for a in padded), weights[start : start + BATCH])


def _np_top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    label_logit = logits[np.arange(len(labels)), labels]
    return (logits > label_logit[:, None]).sum(axis=1) < k


@functools.partial(jax.jit, static_argnums=0)
def _batch_collection(names, logits, labels, weights):
    per_example = losses.sparse_categorical_crossentropy_per_example(logits, labels)
    return metrics_lib.collection_from_model_output(
        names, outputs=logits, targets=labels, weights=weights, loss=per_example
    )


_merge = jax.jit(metrics_lib.merge_collections)


def test_classification_metrics_are_exact_over_a_padded_dataset():
    logits, labels = _dataset()
    metrics = metrics_lib.empty_collection(NAMES)
    for batch_logits, batch_labels, weights in _padded_batches(logits, labels):
        metrics = _merge(metrics, _batch_collection(NAMES, batch_logits, batch_labels, weights))

    assert float(metrics["accuracy"].count) == N
    hits = (logits.argmax(axis=1) == labels).sum()
    assert float(metrics["accuracy"].total) == hits  # exact: small integers in float32
    assert float(metrics["top_k_accuracy"].total) == _np_top_k(logits, labels, 5).sum()
    assert float(metrics["top3_accuracy"].total) == _np_top_k(logits, labels, 3).sum()

    log_softmax = logits - np.log(np.exp(logits.astype(np.float64)).sum(1, keepdims=True))
    expected_loss = -log_softmax[np.arange(N), labels].mean()
    result = metrics_lib.compute_collection(metrics)
    assert result["accuracy"] == pytest.approx(hits / N, rel=1e-7)
    assert result["top_k_accuracy"] == pytest.approx(_np_top_k(logits, labels, 5).mean(), rel=1e-7)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_one_hot_targets_give_the_same_accuracy():
    logits, labels = _dataset(1)
    one_hot = np.eye(C, dtype=np.float32)[labels]
    names = ("accuracy", "top3_accuracy")
    kw = dict(outputs=logits, weights=np.ones(N, np.float32), loss=None)
    from_labels = metrics_lib.collection_from_model_output(names, targets=labels, **kw)
    from_one_hot = metrics_lib.collection_from_model_output(names, targets=one_hot, **kw)
    assert metrics_lib.compute_collection(from_labels) == metrics_lib.compute_collection(
        from_one_hot
    )
    from_column = metrics_lib.collection_from_model_output(names, targets=labels[:, None], **kw)
    assert metrics_lib.compute_collection(from_column) == metrics_lib.compute_collection(
        from_labels
    )


def test_regression_and_binary_metrics_are_exact_over_a_padded_dataset():
    rng = np.random.default_rng(2)
    outputs = rng.normal(size=(N, 1)).astype(np.float32)
    targets = rng.normal(size=(N,)).astype(np.float32)  # (B,) targets for (B, 1) outputs
    binary_targets = (rng.uniform(size=N) > 0.5).astype(np.float32)
    names = ("mae", "mse")

    metrics = metrics_lib.empty_collection((*names, "binary_accuracy"))
    step = jax.jit(
        lambda o, t, bt, w: {
            **metrics_lib.collection_from_model_output(names, outputs=o, targets=t, weights=w),
            "binary_accuracy": metrics_lib.get("binary_accuracy").from_model_output(
                outputs=o, targets=bt, weights=w, loss=None
            ),
        }
    )
    for o, t, bt, w in _padded_batches(outputs, targets, binary_targets):
        metrics = _merge(metrics, step(o, t, bt, w))

    error = outputs[:, 0].astype(np.float64) - targets
    result = metrics_lib.compute_collection(metrics)
    assert result["mae"] == pytest.approx(np.abs(error).mean(), rel=1e-6)
    assert result["mse"] == pytest.approx((error**2).mean(), rel=1e-6)
    hits = ((outputs[:, 0] > 0) == (binary_targets > 0.5)).sum()
    assert float(metrics["binary_accuracy"].total) == hits
    assert float(metrics["binary_accuracy"].count) == N


def test_multi_output_regression_averages_over_output_dims():
    outputs = jnp.array([[1.0, 3.0], [0.0, 0.0]])
    targets = jnp.zeros((2, 2))
    mse = metrics_lib.get("mse").from_model_output(
        outputs=outputs, targets=targets, weights=jnp.ones(2), loss=None
    )
    assert float(mse.compute()) == pytest.approx(((1 + 9) / 2 + 0) / 2)


def test_merge_is_associative_and_commutative():
    rng = np.random.default_rng(3)
    parts = [
        metrics_lib.get("loss").from_model_output(
            loss=jnp.asarray(rng.normal(size=BATCH), jnp.float32),
            weights=jnp.asarray(rng.integers(0, 2, size=BATCH), jnp.float32),
        )
        for _ in range(3)
    ]
    a, b, c = parts
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    for other in (right, swapped):
        np.testing.assert_allclose(other.total, left.total, rtol=1e-6)
        np.testing.assert_array_equal(other.count, left.count)
        np.testing.assert_allclose(other.compute(), left.compute(), rtol=1e-6)
    np.testing.assert_array_equal(a.merge(b).total, b.merge(a).total)  # a + b == b + a exactly


def test_top_k_against_numpy_for_every_k():
    logits, labels = _dataset(4)
    for k in (1, 2, 5, C, C + 3):
        metric = metrics_lib.top_k_accuracy(k).from_model_output(
            outputs=logits, targets=labels, weights=np.ones(N, np.float32), loss=None
        )
        assert float(metric.total) == _np_top_k(logits, labels, k).sum(), k
    # top-1 is accuracy (no ties in random logits); top-C is always right.
    assert _np_top_k(logits, labels, C).all()
    top1 = metrics_lib.top_k_accuracy(1).from_model_output(outputs=logits, targets=labels)
    assert float(top1.total) == (logits.argmax(1) == labels).sum()


def test_top_k_registry_names():
    assert metrics_lib.top_k_accuracy(5) is metrics_lib.get("top_k_accuracy")
    assert metrics_lib.get("top3_accuracy") is metrics_lib.top_k_accuracy(3)
    assert metrics_lib.get("top3_accuracy").name == "top3_accuracy"
    assert metrics_lib.get("top3_accuracy").k == 3
    with pytest.raises(ValueError, match=r"^k: expected an integer >= 1.*; got 0$"):
        metrics_lib.top_k_accuracy(0)


def test_empty_computes_to_zero_and_weights_count():
    assert float(metrics_lib.get("accuracy").empty().compute()) == 0.0
    padding_only = metrics_lib.get("loss").from_model_output(
        loss=jnp.array([5.0, 7.0]), weights=jnp.zeros(2)
    )
    assert float(padding_only.compute()) == 0.0
    # A padded example's value is ignored, however large.
    m = metrics_lib.get("loss").from_model_output(
        outputs=None, targets=None, weights=jnp.array([1.0, 0.0]), loss=jnp.array([2.0, 1e30])
    )
    assert float(m.compute()) == 2.0


def test_metrics_are_pytrees_that_cross_jit():
    logits, labels = _dataset(5)
    weights = np.ones(N, np.float32)
    eager = _batch_collection.__wrapped__(NAMES, logits, labels, weights)
    jitted = _batch_collection(NAMES, logits, labels, weights)
    assert set(jitted) == set(NAMES)
    for name in NAMES:
        assert type(jitted[name]) is type(eager[name])
        np.testing.assert_allclose(jitted[name].total, eager[name].total, rtol=1e-6)
        assert jax.tree.structure(jitted[name]) == jax.tree.structure(eager[name])
        assert jitted[name].total.dtype == jnp.float32
    merged = _merge(jitted, eager)
    np.testing.assert_array_equal(merged["accuracy"].count, 2 * N)


def test_merging_mismatched_metrics_fails():
    a = metrics_lib.get("loss").empty()
    with pytest.raises(TypeError, match=r"^other: expected another Loss.*; got Accuracy$"):
        a.merge(metrics_lib.get("accuracy").empty())
    with pytest.raises(
        ValueError, match=r"^a, b: expected .*same names; got \['loss'\] and \['accuracy'\]$"
    ):
        metrics_lib.merge_collections(
            {"loss": a}, {"accuracy": metrics_lib.get("accuracy").empty()}
        )


def test_unknown_metric_name_lists_valid_names():
    with pytest.raises(ValueError, match="^metrics: unknown name 'f1'; expected one of") as info:
        metrics_lib.get("f1")
    for name in ("loss", "accuracy", "binary_accuracy", "top_k_accuracy", "mae", "mse"):
        assert name in str(info.value)
        assert name in metrics_lib.names()
    with pytest.raises(ValueError, match="^metrics: unknown name 'top0_accuracy'"):
        metrics_lib.get("top0_accuracy")


def test_compute_collection_returns_host_floats():
    metrics = metrics_lib.empty_collection(["loss"])
    metrics = metrics_lib.merge_collections(
        metrics, {"loss": metrics_lib.get("loss").from_model_output(loss=jnp.array([1.0, 2.0]))}
    )
    result = metrics_lib.compute_collection({**metrics, "nonfinite_steps": jnp.array(2, jnp.int32)})
    assert result == {"loss": 1.5, "nonfinite_steps": 2.0}
    assert all(type(v) is float for v in result.values())


def test_metrics_computed_on_the_host_have_the_device_bits():
    rng = np.random.default_rng(0)
    totals = rng.uniform(0, 1e4, 200).astype(np.float32)
    counts = np.concatenate([[0.0], rng.integers(1, 60_000, 199)]).astype(np.float32)
    for total, count in zip(totals, counts, strict=True):
        metric = metrics_lib.Accuracy(total=jnp.asarray(total), count=jnp.asarray(count))
        host = metrics_lib.compute_collection({"accuracy": metric, "steps": jnp.asarray(count)})
        assert host["accuracy"] == float(metric.compute())  # exactly: float32 on both sides
        assert host["steps"] == float(count)
    assert (
        metrics_lib.compute_collection({"accuracy": metrics_lib.Accuracy.empty()})["accuracy"]
        == 0.0
    )
