import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnn.models import CNN, MLP, get_activation, get_initializer, pool


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def test_mlp_784_128_128_10_parameter_count_and_logits():
    model = MLP(features=(128, 128), num_outputs=10)
    x = jnp.ones((3, 28, 28, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    assert count(variables["params"]) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert "batch_stats" not in variables
    assert model.apply(variables, x, train=False).shape == (3, 10)


def test_classic_cnn_structure_and_parameter_count():
    model = CNN(filters=(32, 64), dense=(128,), dropout_rate=0.4)
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    params = variables["params"]
    assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 32)
    assert params["Conv_1"]["kernel"].shape == (3, 3, 32, 64)
    # Two 2x2 poolings: 28 -> 14 -> 7, so the first Dense sees 7*7*64 features.
    assert params["Dense_0"]["kernel"].shape == (7 * 7 * 64, 128)
    assert params["Dense_1"]["kernel"].shape == (128, 10)
    # Convolutions without bias (BatchNorm's offset replaces it), then scale and offset.
    expected = 9 * 32 + 2 * 32 + 9 * 32 * 64 + 2 * 64 + (3136 * 128 + 128) + 1290
    assert "bias" not in params["Conv_0"] and "bias" not in params["Conv_1"]
    assert count(params) == expected
    assert count(variables["batch_stats"]) == 2 * 32 + 2 * 64
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_cnn_rejects_images_without_channel_axis():
    with pytest.raises(ValueError, match=r"x: CNN expects images .* got shape \(2, 28, 28\)"):
        CNN().init(jax.random.key(0), jnp.ones((2, 28, 28)), train=False)


def test_test_time_hflip_averages_the_probabilities_of_each_image_and_its_mirror():
    x = jax.random.uniform(jax.random.key(0), (5, 12, 10, 1))
    plain = CNN(filters=(4, 8), dense=(16,), dropout_rate=0.1)
    flip = CNN(filters=(4, 8), dense=(16,), dropout_rate=0.1, test_time_hflip=True)
    variables = plain.init(jax.random.key(1), x, train=False)
    same = flip.init(jax.random.key(1), x, train=False)  # the same parameters
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, variables)
    p = jax.nn.softmax(plain.apply(variables, x, train=False))
    p_mirror = jax.nn.softmax(plain.apply(variables, x[:, :, ::-1], train=False))
    logits = flip.apply(variables, x, train=False)
    assert logits.shape == (5, 10)
    np.testing.assert_allclose(jax.nn.softmax(logits), (p + p_mirror) / 2, atol=1e-6)
    np.testing.assert_allclose(jnp.exp(logits).sum(1), 1.0, rtol=1e-6)  # log-probabilities
    assert not np.allclose(p, p_mirror, atol=1e-3)  # so the average is not the plain output
    # Training (dropout, batch statistics) is the plain model's, bit for bit.
    kwargs = {"train": True, "rngs": {"dropout": jax.random.key(2)}, "mutable": ["batch_stats"]}
    trained, trained_flip = plain.apply(variables, x, **kwargs), flip.apply(variables, x, **kwargs)
    jax.tree_util.tree_map(np.testing.assert_array_equal, trained, trained_flip)


def test_test_time_hflip_needs_a_softmax_classifier():
    model = CNN(filters=(4,), dense=(), num_outputs=1, test_time_hflip=True)
    with pytest.raises(ValueError, match=r"^test_time_hflip: .*>= 2.*got num_outputs=1"):
        model.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), train=False)


@pytest.mark.parametrize(
    "name, formula",
    [
        ("relu", lambda x: np.maximum(x, 0)),
        ("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x)),
        ("elu", lambda x: np.where(x > 0, x, np.expm1(x))),
        ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
        ("tanh", np.tanh),
        ("softplus", lambda x: np.log1p(np.exp(x))),
        ("identity", lambda x: x),
        # tanh approximation of GELU, Flax's default
        ("gelu", lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    ],
)
def test_activations_match_formulas(name, formula):
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    np.testing.assert_allclose(
        get_activation(name)(jnp.asarray(x)), formula(x), rtol=1e-5, atol=1e-6
    )


def test_unknown_activation_and_initializer_list_valid_names():
    with pytest.raises(ValueError, match=r"activation: unknown name 'swishy'.*'relu'"):
        get_activation("swishy")
    with pytest.raises(ValueError, match=r"kernel_init: unknown name 'xavier'.*'glorot_uniform'"):
        get_initializer("xavier")


def test_default_kernel_init_is_glorot_uniform_like_keras():
    params = MLP(features=(), num_outputs=400).init(
        jax.random.key(1), jnp.ones((1, 600)), train=False
    )["params"]
    kernel = np.asarray(params["Dense_0"]["kernel"])
    limit = np.sqrt(6 / (600 + 400))
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.99 * limit
    np.testing.assert_allclose(kernel.var(), limit**2 / 3, rtol=0.02)  # uniform(-a, a) variance
    np.testing.assert_array_equal(params["Dense_0"]["bias"], 0)


def test_he_normal_kernel_init_by_name():
    params = MLP(features=(), num_outputs=500, kernel_init="he_normal").init(
        jax.random.key(2), jnp.ones((1, 800)), train=False
    )["params"]
    # truncated normal with the variance corrected to 2 / fan_in
    np.testing.assert_allclose(np.asarray(params["Dense_0"]["kernel"]).var(), 2 / 800, rtol=0.02)


def test_pytorch_uniform_kernel_init_has_pytorchs_bound_one_over_sqrt_fan_in():
    # a 3x3 convolution from 8 channels: fan_in 72, PyTorch's bound 1/sqrt(72)
    params = CNN(filters=(64,), dense=(), num_outputs=2, pool=None, kernel_init="pytorch_uniform")
    params = params.init(jax.random.key(3), jnp.ones((1, 4, 4, 8)), train=False)["params"]
    kernel = np.asarray(params["Conv_0"]["kernel"])
    bound = 1 / np.sqrt(3 * 3 * 8)
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.99 * bound
    np.testing.assert_allclose(kernel.var(), bound**2 / 3, rtol=0.05)  # uniform(-a, a) variance


@pytest.mark.parametrize("size", [8, 7])
def test_reshape_pooling_equals_flax_pooling_and_its_gradient(size):
    x = jax.random.normal(jax.random.key(3), (2, size, size, 3))
    np.testing.assert_allclose(pool(x, "max"), nn.max_pool(x, (2, 2), (2, 2), "VALID"))
    # (summation order differs on GPU: ~1e-6 there)
    np.testing.assert_allclose(pool(x, "avg"), nn.avg_pool(x, (2, 2), (2, 2), "VALID"), rtol=1e-5)
    weights = jax.random.normal(jax.random.key(4), pool(x, "max").shape)
    ours = jax.grad(lambda v: jnp.sum(pool(v, "max") * weights))(x)
    theirs = jax.grad(lambda v: jnp.sum(nn.max_pool(v, (2, 2), (2, 2), "VALID") * weights))(x)
    np.testing.assert_allclose(ours, theirs)
    assert pool(x, None) is x


@pytest.mark.parametrize("window", [2, 3])
def test_max_pool_gradient_is_jaxs_bit_for_bit_with_ties(window):
    """pool's custom gradient splits between tied maxima exactly as JAX's gradient of ``max``
    does: ReLU zeros and constant image regions make ties common, not a corner case."""
    x = np.random.default_rng(0).normal(size=(4, 13, 12, 5)).astype(np.float32)
    x[:, :6, :6] = 0.7  # whole windows tied
    x[:, 7, 7:9], x[:, 8, 7] = 1.5, 1.5  # a three-way tie
    x = jax.nn.relu(jnp.asarray(x))
    weights = jax.random.normal(jax.random.key(5), pool(x, "max", window).shape)

    def jax_reference(v):
        b, h, w, c = v.shape
        hh, ww = h // window, w // window
        windows = v[:, : hh * window, : ww * window].reshape(b, hh, window, ww, window, c)
        return windows.max(axis=(2, 4))

    for transform in (lambda f: f, jax.jit):
        ours = transform(jax.grad(lambda v: jnp.sum(pool(v, "max", window) * weights)))(x)
        theirs = transform(jax.grad(lambda v: jnp.sum(jax_reference(v) * weights)))(x)
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(pool(x, "max", window), jax_reference(x))
    tied = np.asarray(jax.grad(lambda v: jnp.sum(pool(v, "max", window)))(x))[0, :window, :window]
    np.testing.assert_allclose(tied, 1 / window**2)  # one window's gradient, shared by its ties


def test_dropout_is_random_in_training_and_off_in_evaluation():
    model = MLP(features=(64,), dropout_rate=0.5)
    x = jnp.ones((4, 10))
    variables = model.init(jax.random.key(0), x, train=False)
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(
        model.apply(variables, x, train=False), model.apply(variables, x, train=False)
    )


def test_batchnorm_mask_keeps_padding_out_of_the_statistics():
    model = MLP(features=(5,), batch_norm=True)
    x = jax.random.normal(jax.random.key(0), (6, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    mask = jnp.array([1, 1, 1, 1, 0, 0], jnp.float32)
    padded = x.at[4:].set(100.0)  # garbage in the padded rows
    _, masked = model.apply(variables, padded, train=True, mask=mask, mutable=["batch_stats"])
    _, short = model.apply(variables, x[:4], train=True, mutable=["batch_stats"])
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), masked, short
    )
    # Keras' momentum 0.99: the running mean moves 1 % of the way to the batch mean.
    dense_params = variables["params"]["Dense_0"]
    assert "bias" not in dense_params  # BatchNorm's offset replaces it
    dense = np.asarray(x[:4]) @ np.asarray(dense_params["kernel"])
    np.testing.assert_allclose(
        short["batch_stats"]["BatchNorm_0"]["mean"], 0.01 * dense.mean(0), rtol=1e-5, atol=1e-7
    )


def summary_rows(table):
    """Layer name -> (output shape text, trainable, non-trainable) from a model_summary table."""
    rows = {}
    for line in table.splitlines()[2:]:
        if line.startswith("-"):
            break
        name, rest = line.split(maxsplit=1)
        shape, numbers = rest.split(")", 1)
        trainable, frozen, _ = numbers.split()
        rows[name] = (shape + ")", int(trainable.replace(",", "")), int(frozen.replace(",", "")))
    return rows


def test_model_summary_shows_poolings_flatten_and_splits_batchnorm_parameters():
    from jaxnn.report import model_summary

    model = CNN(filters=(32, 64), dense=(128,), dropout_rate=0.4)
    variables = model.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)), train=False)
    table = model_summary(model, variables, (28, 28, 1))
    rows = summary_rows(table)
    assert list(rows) == [
        "Conv_0", "BatchNorm_0", "MaxPool_0", "Conv_1", "BatchNorm_1", "MaxPool_1",
        "Flatten_0", "Dropout_0", "Dense_0", "Dense_1",
    ]  # fmt: skip
    assert rows["MaxPool_0"] == ("(None, 14, 14, 32)", 0, 0)
    assert rows["MaxPool_1"] == ("(None, 7, 7, 64)", 0, 0)
    assert rows["Flatten_0"] == ("(None, 3136)", 0, 0)
    # scale and bias are trained; the running mean and variance are not
    assert rows["BatchNorm_0"][1:] == (2 * 32, 2 * 32) and rows["BatchNorm_1"][1:] == (128, 128)
    trainable = 9 * 32 + 2 * 32 + 9 * 32 * 64 + 2 * 64 + (3136 * 128 + 128) + 1290
    frozen = 2 * 32 + 2 * 64
    assert sum(r[1] for r in rows.values()) == trainable
    total_mb = (trainable + frozen) * 4 / 1024**2
    assert f"Total params: {trainable + frozen:,} ({total_mb:.2f} MB)" in table
    assert f"Trainable params: {trainable:,} ({trainable * 4 / 1024**2:.2f} MB)" in table
    assert f"Non-trainable params (BatchNorm statistics): {frozen:,} ({frozen * 4:.2f} B)" in table


def test_model_summary_names_average_pooling_and_an_mlp_flattening():
    from jaxnn.report import model_summary

    model = CNN(filters=(8,), dense=(), pool="avg", batch_norm=False)
    variables = model.init(jax.random.key(0), jnp.ones((1, 9, 9, 1)), train=False)
    rows = summary_rows(model_summary(model, variables, (9, 9, 1)))
    # 9 -> 4 ('valid' pooling drops the last row and column), then 4*4*8 features
    assert list(rows) == ["Conv_0", "AvgPool_0", "Flatten_0", "Dense_0"]
    assert rows["AvgPool_0"][0] == "(None, 4, 4, 8)" and rows["Flatten_0"][0] == "(None, 128)"
    mlp = MLP(features=(5,), num_outputs=2)
    variables = mlp.init(jax.random.key(0), jnp.ones((1, 3, 4)), train=False)
    rows = summary_rows(model_summary(mlp, variables, (3, 4)))
    assert list(rows) == ["Flatten_0", "Dense_0", "Dense_1"]
    assert rows["Flatten_0"] == ("(None, 12)", 0, 0)


@pytest.mark.parametrize("cost_analysis", [True, False])
def test_model_summary_of_a_flipping_cnn_counts_the_trained_pass_and_the_evaluation_apart(
    cost_analysis, monkeypatch
):
    from jaxnn.report import model_summary

    if not cost_analysis:  # a backend without XLA's cost analysis: the layers' FLOPs are summed

        def unavailable(self):
            raise NotImplementedError("no cost analysis here")

        monkeypatch.setattr(jax.stages.Compiled, "cost_analysis", unavailable)

    def flops(table: str, prefix: str) -> int:
        lines = [line for line in table.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1, table
        return int(lines[0].rsplit(": ", 1)[1].replace(",", ""))

    plain, flipping = (
        CNN(filters=(8,), dense=(16,)),
        CNN(filters=(8,), dense=(16,), test_time_hflip=True),
    )
    variables = plain.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), train=False)
    plain_table = model_summary(plain, variables, (8, 8, 1))
    table = model_summary(flipping, variables, (8, 8, 1))
    assert table.startswith(plain_table)  # the same layers, parameters and per-example total
    per_example = flops(plain_table, "FLOPs per example (forward")
    evaluating = flops(table, "FLOPs per example when evaluating or predicting (test-time flips")
    assert "test-time flips" not in plain_table
    if cost_analysis:
        assert 2 * per_example <= evaluating < 2.2 * per_example  # both images, then averaging
    else:
        lines = table.splitlines()
        body = lines[2 : lines.index(lines[1], 2)]  # the rows between the two rules
        layers = sum(int(row.split()[-1].replace(",", "")) for row in body)
        assert "FLOPs per example (forward, sum of the layers)" in table
        assert per_example == layers and evaluating == 2 * per_example


@pytest.mark.parametrize("model_class", [MLP, CNN])
def test_batch_norm_momentum_and_epsilon_follow_the_formula(model_class):
    # One training step from zero running averages: mean <- (1 - momentum) * batch mean, and
    # the normalised output uses epsilon: y = (x - m) / sqrt(v + eps) (scale 1, bias 0).
    kwargs = {"features": (3,)} if model_class is MLP else {"filters": (2,), "dense": ()}
    model = model_class(num_outputs=2, batch_norm=True, bn_momentum=0.9, bn_epsilon=0.5, **kwargs)
    x = jax.random.normal(jax.random.key(1), (8, 4) if model_class is MLP else (8, 4, 4, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    (bn,) = updates["batch_stats"].values()  # the one BatchNorm layer
    intercepted = {}

    def capture(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            intercepted["in"], intercepted["out"] = args[0], next_fun(*args, **kwargs)
            return intercepted["out"]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, x, train=True, mutable=["batch_stats"])
    axes = tuple(range(intercepted["in"].ndim - 1))
    batch_mean = np.asarray(intercepted["in"]).mean(axes)
    batch_var = np.asarray(intercepted["in"]).var(axes)
    np.testing.assert_allclose(bn["mean"], 0.1 * batch_mean, rtol=1e-5, atol=1e-7)
    expected = (np.asarray(intercepted["in"]) - batch_mean) / np.sqrt(batch_var + 0.5)
    np.testing.assert_allclose(intercepted["out"], expected, rtol=1e-4, atol=1e-5)
    assert model_class().bn_momentum == 0.99 and model_class().bn_epsilon == 1e-3  # Keras'
