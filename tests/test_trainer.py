import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnn
from jaxnn import CNN, MLP, Trainer


def blobs(n=120, features=4, classes=3, seed=0):
    """Linearly separable clusters: class c sits at 4·e_c."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, features)).astype(np.float32)
    x[np.arange(n), y] += 4.0
    return x, y


def tree_equal(a, b):
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_fit_reaches_full_training_accuracy_on_separable_data():
    x, y = blobs()
    trainer = Trainer(MLP(features=(16,), num_outputs=3), optimizer=optax.adam(0.05), seed=0)
    history = trainer.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert trainer.evaluate(x, y)["accuracy"] == 1.0
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["loss"]) == 15
    probabilities = trainer.predict(x)
    assert probabilities.shape == (120, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert (probabilities.argmax(1) == y).all()


def fit_once(seed, **kwargs):
    x, y = blobs(n=50)
    trainer = Trainer(
        MLP(features=(8,), num_outputs=3, dropout_rate=0.3, batch_norm=True),
        optimizer="adam",
        seed=seed,
    )
    history = trainer.fit(x, y, epochs=3, batch_size=8, validation_split=0.2, verbose=0, **kwargs)
    history.pop("epoch_time_s")
    history.pop("train_time_s")
    return trainer, history


def test_same_seed_is_bitwise_identical_and_other_seeds_differ():
    a, history_a = fit_once(0)
    b, history_b = fit_once(0)
    c, history_c = fit_once(1)
    assert tree_equal(a.state, b.state)
    assert history_a == history_b
    assert not tree_equal(a.state.params, c.state.params)
    assert history_a != history_c


@pytest.mark.parametrize("batch_norm", [False, True])
def test_steps_per_dispatch_does_not_change_the_result(batch_norm):
    x, y = blobs(n=50)
    results = []
    for k in (1, 4):  # 7 steps per epoch: a dispatch of 4, then one of 4 that skips its last
        model = MLP(features=(8,), num_outputs=3, batch_norm=batch_norm, dropout_rate=0.1)
        trainer = Trainer(model, seed=0, steps_per_dispatch=k)
        history = trainer.fit(x, y, epochs=2, batch_size=8, verbose=0)
        assert int(trainer.state.step) == trainer.global_step == 14  # no step ran on padding
        # One compiled train function for the whole run; a second only where BatchNorm must be
        # told about the padded last batch.
        assert trainer._steps.train._cache_size() == (2 if batch_norm else 1)
        results.append((trainer.state.variables, history["loss"], history["accuracy"]))
    # Scanned and single steps are the same math but XLA fuses them differently: on the Intel
    # Xeon (AMX) VM the BatchNorm model's parameters differ by up to 4e-6 relative after 14 steps.
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *results
    )


def manual_sgd(x, y, batches, learning_rate, model, params):
    """Plain SGD written out: mean cross-entropy of each batch, then w -= lr * grad."""

    def loss_fn(p, xb, yb):
        logits = model.apply({"params": p}, xb, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    for batch in batches:
        grads = jax.grad(loss_fn)(params, x[batch], y[batch])
        params = jax.tree_util.tree_map(lambda w, g: w - learning_rate * g, params, grads)
    return params


@pytest.mark.parametrize("batch_size", [10, 4, 1])
def test_one_epoch_without_shuffle_equals_handwritten_sgd(batch_size):
    """Batch GD (batch = dataset), mini-batches with a short masked last batch (4, 4, 2), SGD."""
    x, y = blobs(n=10)
    model = MLP(features=(5,), num_outputs=3)
    trainer = Trainer(model, optimizer={"name": "sgd", "learning_rate": 0.1}, seed=3)
    initial = jaxnn.create_train_state(model, optax.sgd(0.1), jnp.zeros((1, 4)), seed=3).params
    trainer.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
    batches = [np.arange(i, min(i + batch_size, 10)) for i in range(0, 10, batch_size)]
    expected = manual_sgd(x, y, batches, 0.1, model, initial)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
        trainer.state.params,
        expected,
    )
    assert int(trainer.state.step) == len(batches)


@pytest.mark.parametrize("model", [MLP(features=(5,), num_outputs=3, batch_norm=True), CNN((4,))])
def test_initial_state_is_bitwise_that_of_an_optimised_compile(model):
    """On CPU the Trainer compiles its one-off initialisation without LLVM optimisations (faster
    start); with the default (uniform) initialisers that gives exactly the same state."""
    shape = (1, 4) if isinstance(model, MLP) else (1, 6, 6, 1)
    tx = optax.adam(1e-3)
    trainer = Trainer(model, optimizer=tx, seed=5)
    trainer.initialize(np.zeros(shape, np.float32), steps_per_epoch=1)
    expected = jax.jit(lambda: jaxnn.create_train_state(model, tx, jnp.zeros(shape), seed=5))()
    leaves = jax.tree_util.tree_leaves(trainer.state)
    assert len(leaves) == len(jax.tree_util.tree_leaves(expected)) > 5
    for got, want in zip(leaves, jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_evaluate_is_exact_when_size_is_not_a_multiple_of_the_batch():
    x, y = blobs(n=103, seed=5)
    trainer = Trainer(MLP(features=(4,), num_outputs=3), metrics=["accuracy"], seed=0)
    trainer.fit(x, y, epochs=1, batch_size=32, verbose=0)
    probabilities = trainer.predict(x, batch_size=10)
    expected_accuracy = np.mean(probabilities.argmax(1) == y)
    expected_loss = np.mean(-np.log(probabilities[np.arange(103), y]))
    result = trainer.evaluate(x, y, batch_size=10)
    assert result["accuracy"] == pytest.approx(expected_accuracy, abs=1e-7)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_training_metrics_count_every_example_once():
    """With lr=0 the params never move, so the epoch's train accuracy equals evaluate()'s."""
    x, y = blobs(n=37, seed=2)
    trainer = Trainer(
        MLP(features=(4,), num_outputs=3), optimizer=optax.sgd(0.0), metrics=["accuracy"]
    )
    history = trainer.fit(x, y, epochs=1, batch_size=5, verbose=0)
    result = trainer.evaluate(x, y)
    assert history["accuracy"][0] == pytest.approx(result["accuracy"], abs=1e-7)
    assert history["loss"][0] == pytest.approx(result["loss"], rel=1e-5)


def test_binary_classification_and_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    binary = Trainer(
        MLP(features=(16,), num_outputs=1),
        loss="binary_crossentropy",
        metrics=["binary_accuracy"],
        optimizer=optax.adam(0.01),
    )
    binary.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert binary.evaluate(x, y)["binary_accuracy"] > 0.95
    p = binary.predict(x)
    assert p.shape == (200, 1) and (p >= 0).all() and (p <= 1).all()

    w = rng.normal(size=(10,)).astype(np.float32)
    xr = rng.normal(size=(300, 10)).astype(np.float32)
    yr = xr @ w
    regression = Trainer(
        MLP(features=(), num_outputs=1), loss="mse", metrics=["mae"], optimizer=optax.adam(0.05)
    )
    history = regression.fit(xr, yr, epochs=40, batch_size=32, verbose=0)
    assert history["loss"][-1] < 1e-3 * history["loss"][0]
    np.testing.assert_allclose(regression.predict(xr)[:, 0], yr, atol=0.05)


def test_label_smoothing_trains_and_reports_the_smoothed_loss_and_raw_accuracy():
    x, y = blobs(n=48)
    loss = jaxnn.losses.get("sparse_categorical_crossentropy", label_smoothing=0.1)
    model = MLP(features=(8,), num_outputs=3)
    trainer = Trainer(model, loss=loss, optimizer=optax.adam(0.05), seed=0)
    history = trainer.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert trainer.loss is loss and np.all(np.isfinite(history["loss"]))
    result = trainer.evaluate(x, y)
    logits = model.apply(trainer.variables, jnp.asarray(x), train=False)
    # As in Keras: the reported loss is the smoothed one; accuracy is on the raw outputs.
    assert result["loss"] == pytest.approx(float(loss(logits, y)), rel=1e-5)
    unsmoothed = jaxnn.losses.get("sparse_categorical_crossentropy")(logits, y)
    assert abs(result["loss"] - float(unsmoothed)) > 1e-3
    assert result["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)))
    np.testing.assert_allclose(trainer.predict(x), jax.nn.softmax(logits), rtol=1e-5, atol=1e-7)


def test_cnn_with_batchnorm_trains_and_reports_learning_rate_and_grad_norm():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = rng.normal(0, 0.1, (64, 8, 8, 1)).astype(np.float32)
    x[y == 1, :4] += 1.0  # class 1: a bright top half
    trainer = Trainer(
        CNN(filters=(4,), dense=(8,), num_outputs=2),
        optimizer={"name": "adam", "learning_rate": 0.01, "schedule": {"name": "cosine"}},
    )
    history = trainer.fit(x, y, epochs=4, batch_size=16, validation_data=(x, y), verbose=0)
    assert history["accuracy"][-1] == 1.0  # with batch statistics
    # Evaluation uses the running statistics, which after 16 steps at Keras' momentum 0.99 have
    # moved only 15 % of the way from their initial values: clearly learnt, not yet perfect.
    assert history["val_accuracy"][-1] > 0.9
    assert history["learning_rate"][0] < 0.01  # a cosine over 4 epochs has decayed already
    assert history["learning_rate"] == sorted(history["learning_rate"], reverse=True)
    assert all(g > 0 for g in history["grad_norm"])


def test_divergence_stops_with_an_error_naming_the_epoch():
    x = np.ones((8, 2), np.float32) * 1e3
    y = np.ones((8,), np.float32) * 1e3
    trainer = Trainer(
        MLP(features=(4,), num_outputs=1), loss="mse", metrics=[], optimizer=optax.sgd(1e6)
    )
    with pytest.raises(jaxnn.TrainingDivergedError, match=r"epoch \d+ at global step \d+"):
        trainer.fit(x, y, epochs=3, batch_size=4, verbose=0)


# ---------------------------------------------------------------------------- bad input
X, Y = blobs(n=20)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"x": X, "y": Y[:19]},
            r"x and y: expected the same number of examples; got 20 in x and 19",
        ),
        ({"batch_size": 0}, r"batch_size: expected an integer >= 1; got 0"),
        ({"validation_split": 1.0}, r"validation_split: expected a float in \[0, 1\); got 1.0"),
        ({"validation_split": -0.1}, r"validation_split: expected a float in \[0, 1\)"),
        ({"y": np.where(Y == 2, 3, Y)}, r"y.*\[0, 3\).*3"),
        ({"x": np.where(X > 3.5, np.nan, X)}, r"x: expected finite values; got NaN or Inf"),
        ({"y": np.eye(3)[Y]}, r"y.*categorical_crossentropy"),
        ({"epochs": -1}, r"epochs: expected an integer >= 0"),
    ],
)
def test_bad_fit_arguments_raise_clear_errors(kwargs, message):
    args = {"x": X, "y": Y, "epochs": 1, "batch_size": 4, "verbose": 0, **kwargs}
    trainer = Trainer(MLP(num_outputs=3))
    with pytest.raises(ValueError, match=message):
        trainer.fit(**args)
    assert trainer.state is None  # raised before anything was built or compiled


def test_input_shape_mismatch_is_named():
    trainer = Trainer(MLP(features=(4,), num_outputs=3))
    trainer.fit(X, Y, epochs=1, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"x: expected examples of shape \(4,\).*got \(3,\)"):
        trainer.evaluate(X[:, :3], Y)
    with pytest.raises(ValueError, match=r"x: CNN expects images .* got shape \(4, 28, 28\)"):
        Trainer(CNN()).fit(np.zeros((4, 28, 28), np.float32), np.zeros(4, int), verbose=0)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        Trainer(MLP(), loss="crossentropy")
    with pytest.raises(ValueError, match="accuracy"):
        Trainer(MLP(), metrics=["acuracy"])
    with pytest.raises(ValueError, match="adam"):
        Trainer(MLP(), optimizer="adamm")
    with pytest.raises(ValueError, match=r"activation: unknown name 'rel'"):
        Trainer(MLP(activation="rel")).fit(X, Y, verbose=0)


def test_streaming_from_the_host_gives_the_same_result_as_device_resident_data():
    """Data over device_data_limit_bytes stays on the host and is copied batch-chunk by chunk."""
    x, y = blobs(n=50)
    results = []
    for limit in (2**40, 0):  # everything on device / everything streamed
        trainer = Trainer(
            MLP(features=(8,), num_outputs=3, batch_norm=True),
            seed=0,
            steps_per_dispatch=4,
            device_data_limit_bytes=limit,
        )
        history = trainer.fit(x, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0)
        results.append((trainer.state.params, history["val_loss"], trainer.evaluate(x, y)))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        results[0][0],
        results[1][0],
    )
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    assert results[0][2]["accuracy"] == results[1][2]["accuracy"]


def test_cpu_convolutions_compile_outside_ynnpack_by_default():
    """XLA CPU's YNNPACK convolutions run on one thread (jaxlib 0.10); the Trainer's default
    options hand them to XLA's multi-threaded kernels and leave dots/reductions to YNNPACK."""
    if jax.default_backend() != "cpu" or jaxnn.step._usable_cores() < 2:
        pytest.skip("the option is chosen for multi-core CPUs")
    options = jaxnn.step.default_compiler_options("cpu")
    assert Trainer(CNN((4,))).compiler_options == options != {}
    assert Trainer(CNN((4,)), compiler_options={}).compiler_options == {}
    assert jaxnn.step.default_compiler_options("gpu") == {}

    def conv_dense(x, w, v):
        dimension_numbers = ("NHWC", "HWIO", "NHWC")
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dimension_numbers)
        return y.reshape(2, -1) @ v

    # Big enough for XLA to pick YNNPACK (it keeps tiny convolutions); only compiled, not run.
    args = (jnp.ones((2, 6, 6, 32)), jnp.ones((3, 3, 32, 64)), jnp.ones((2304, 5)))

    def ynn_fusions(compiler_options):
        compiled = jax.jit(conv_dense, compiler_options=compiler_options).lower(*args).compile()
        return [line for line in compiled.as_text().splitlines() if "__ynn_fusion" in line]

    assert any("conv_general_dilated" in line for line in ynn_fusions(None))  # XLA's default
    with_options = ynn_fusions(options)
    assert with_options and not any("conv_general_dilated" in line for line in with_options)
    with pytest.raises(ValueError, match="compiler_options: expected a dict .* got str"):
        Trainer(CNN((4,)), compiler_options="fast")


def test_an_xla_that_rejects_the_cpu_option_gets_xla_defaults(monkeypatch, caplog):
    if jaxnn.step._usable_cores() < 2:
        pytest.skip("the option is only asked for on multi-core CPUs")
    bad = {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"}
    monkeypatch.setattr(jaxnn.step, "_CPU_COMPILER_OPTIONS", bad)
    jaxnn.step._cpu_options_accepted.cache_clear()
    try:
        assert jaxnn.step.default_compiler_options("cpu") == {}
        assert "not accepted" in caplog.text
    finally:
        jaxnn.step._cpu_options_accepted.cache_clear()
    monkeypatch.undo()
    assert jaxnn.step.default_compiler_options("cpu") != {}


def test_a_batch_larger_than_the_data_trains_on_all_of_it_and_says_so():
    x, y = blobs(n=40)
    trainer = Trainer(MLP(features=(4,), num_outputs=3), seed=0)
    with pytest.warns(UserWarning, match=r"batch_size: 1000000 is larger than the 40 training"):
        trainer.fit(x, y, epochs=2, batch_size=10**6, verbose=0)
    # One step per epoch over the 40 examples, not a million padded rows.
    assert trainer.steps_per_epoch == 1 and trainer.global_step == 2
    same = Trainer(MLP(features=(4,), num_outputs=3), seed=0)
    same.fit(x, y, epochs=2, batch_size=40, verbose=0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, trainer.variables, same.variables)


@pytest.mark.parametrize(
    "model, x, message",
    [
        (MLP(num_outputs=0), np.zeros((4, 3), np.float32), r"model.num_outputs: .* >= 1; got 0"),
        (MLP(features=(-3,)), np.zeros((4, 3), np.float32), r"model.features: .*got \(-3,\)"),
        (
            CNN(filters=(4, 4, 4)),
            np.zeros((4, 3, 3, 1), np.float32),
            r"x: images of 3×3 are too small for the CNN's 3 2×2 poolings; expected at least 8×8",
        ),
    ],
)
def test_models_that_cannot_fit_their_input_are_refused_before_initialising(model, x, message):
    with pytest.raises(ValueError, match=message):
        Trainer(model).fit(x, np.zeros(4, np.int32), verbose=0)


def test_metrics_that_do_not_fit_the_loss_are_refused():
    with pytest.raises(ValueError, match=r"metrics: 'mae' measures regression outputs.*'accuracy'"):
        Trainer(MLP(), metrics=["mae"])
    with pytest.raises(ValueError, match=r"metrics: 'accuracy' measures multiclass outputs"):
        Trainer(MLP(num_outputs=1), loss="mse", metrics=["accuracy"])
    # Without metrics named, each task reports its usual one.
    assert Trainer(MLP(num_outputs=1), loss="mse").metric_names == ("mae",)
    assert Trainer(MLP(num_outputs=1), loss="binary_crossentropy").metric_names == (
        "binary_accuracy",
    )
    assert Trainer(MLP()).metric_names == ("accuracy",)


def test_a_callback_that_is_not_a_callback_and_a_nan_learning_rate_are_refused():
    def on_epoch_end(loop, epoch, logs):
        pass

    with pytest.raises(ValueError, match=r"callbacks: expected jaxnn.Callback objects.*Subclass"):
        Trainer(MLP()).fit(X, Y, callbacks=[on_epoch_end], verbose=0)
    with pytest.raises(ValueError, match=r"optimizer.learning_rate: expected a finite number"):
        Trainer(MLP(), optimizer={"name": "adam", "learning_rate": float("nan")})


def test_summary_prints_and_returns_the_table_and_needs_an_initialised_state(capsys):
    x, _ = blobs(n=16)
    trainer = Trainer(MLP(features=(5,), num_outputs=3), optimizer=optax.sgd(0.1))
    with pytest.raises(RuntimeError, match="fit"):
        trainer.summary()
    trainer.initialize(x, batch_size=8)
    table = trainer.summary()
    assert capsys.readouterr().out == table + "\n"
    assert f"Total params: {4 * 5 + 5 + 5 * 3 + 3:,} (" in table
    assert table.splitlines()[2].split()[:2] == ["Dense_0", "(None,"]


def test_a_plain_optax_optimizer_logs_no_learning_rate_and_a_config_does():
    x, y = blobs(n=32)
    plain = Trainer(MLP(features=(4,), num_outputs=3), optimizer=optax.adam(1e-2))
    assert "learning_rate" not in plain.fit(x, y, epochs=2, batch_size=16, verbose=0)
    configured = Trainer(MLP(features=(4,), num_outputs=3), optimizer={"name": "adam"})
    history = configured.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert history["learning_rate"] == [pytest.approx(1e-3)] * 2


@pytest.mark.parametrize(
    "optimizer",
    [
        optax.adam(1e-2),
        {"name": "adam", "learning_rate": 1e-2},
        {"name": "sgd", "schedule": {"name": "step", "decay_every_epochs": 1}},
    ],
    ids=["optax", "constant_config", "step_schedule"],
)
def test_a_later_fit_reuses_the_compiled_steps_and_continues_bitwise(optimizer):
    x, y = blobs(n=40)
    model = MLP(features=(8,), num_outputs=3, dropout_rate=0.1)
    once = Trainer(model, optimizer=optimizer, seed=0)
    once.fit(x, y, epochs=3, batch_size=8, verbose=0)
    twice = Trainer(model, optimizer=optimizer, seed=0)
    twice.fit(x, y, epochs=1, batch_size=8, verbose=0)
    steps = twice._steps
    compiled = steps.train._cache_size()
    twice.fit(x, y, epochs=2, batch_size=8, verbose=0)
    # The run grew from 1 to 3 epochs, which none of these optimizers reads: nothing recompiled.
    assert twice._steps is steps and steps.train._cache_size() == compiled
    assert tree_equal(once.state, twice.state)


def test_a_later_fit_rebuilds_a_cosine_over_the_runs_length():
    x, y = blobs(n=40)
    config = {"name": "adam", "learning_rate": 1e-2, "schedule": {"name": "cosine"}}
    trainer = Trainer(MLP(features=(8,), num_outputs=3), optimizer=config, seed=0)
    first = trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    steps = trainer._steps
    later = trainer.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert trainer._steps is not steps  # the run is now 3 epochs of 5 steps, and so the cosine
    # Each epoch logs the rate of its last update (steps 4, then 9 and 14, counted from 0): the
    # first cosine spanned 5 steps, the rebuilt one spans 15 (it would have stayed at 0).
    first_cosine, cosine = (optax.cosine_decay_schedule(1e-2, n) for n in (5, 15))
    assert first["learning_rate"] == [pytest.approx(float(first_cosine(4)), rel=1e-5)]
    assert later["learning_rate"] == [pytest.approx(float(cosine(k)), rel=1e-5) for k in (9, 14)]
