"""``jaxnn.Sweep``: K members trained in one vmapped program end like K single runs.

Equivalence tolerance: vmap turns every matmul and convolution into a batched one, which XLA CPU
sums in another order than the single run's kernel, so states agree to float32 rounding, not
bit for bit (measured: at most ~3e-7 absolute after 2 epochs here; docs/sweeps.md). The tests
allow 2e-5 on every state leaf and 1e-5 relative on every logged value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxnn
from jaxnn.callbacks import EarlyStopping, ReduceLROnPlateau
from jaxnn.state import init_on_mesh
from jaxnn.sweep_members import check_members, traced_values

REPO = Path(__file__).resolve().parents[1]
STATE_ATOL = 2e-5
LOG_RTOL = 1e-5


def data(n: int = 300, features: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 0.8)).astype(np.int32)
    return x, y


def mlp(**kwargs):
    options = {"features": (16, 8), "num_outputs": 3, "dropout_rate": 0.2, "batch_norm": True}
    return jaxnn.MLP(**{**options, **kwargs})


def max_difference(a, b) -> float:
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q)))) for p, q in leaves)


def assert_matches_single_runs(model, members, x, y, fit_kwargs, sweep_kwargs=None, callbacks=None):
    sweep = jaxnn.Sweep(model, members, **(sweep_kwargs or {}))
    # ``callbacks``: a function giving one run's fresh callbacks (each member gets its own).
    member_callbacks = [callbacks() for _ in members] if callbacks else None
    histories = sweep.fit(x, y, verbose=0, callbacks=member_callbacks, **fit_kwargs)
    for i, member in enumerate(members):
        trainer = jaxnn.Trainer(model, optimizer=member["optimizer"], seed=member["seed"])
        own = callbacks() if callbacks else ()
        history = trainer.fit(x, y, verbose=0, callbacks=own, **fit_kwargs)
        assert max_difference(trainer.state, sweep.member_state(i)) < STATE_ATOL, i
        assert set(history) == set(histories[i])
        for key in history:
            if not key.endswith("time_s"):
                np.testing.assert_allclose(histories[i][key], history[key], rtol=LOG_RTOL)
    return sweep, histories


# Two members each (the suite's time): one traced number per case, seeds differing too.
CASES = {
    "seeds": [{"seed": s, "optimizer": {"name": "adam"}} for s in (0, 1)],
    "learning_rate": [
        {"seed": s, "optimizer": {"name": "adam", "learning_rate": lr}}
        for s, lr in ((0, 3e-3), (1, 3e-4))
    ],
    "l2": [
        {"seed": 1, "optimizer": {"name": "sgd", "learning_rate": 0.1, "l2": l2}}
        for l2 in (1e-4, 1e-1)
    ],
    "momentum": [
        {"seed": s, "optimizer": {"name": "momentum", "learning_rate": 0.05, "momentum": m}}
        for s, m in ((0, 0.5), (2, 0.95))
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_member_ends_like_its_single_run(case):
    x, y = data()
    fit = {"epochs": 2, "batch_size": 32, "validation_split": 0.2}
    assert_matches_single_runs(mlp(), CASES[case], x, y, fit)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_every_member_starts_from_the_bits_of_its_own_initialisation(model):
    # One vmapped, compiled initialisation for the K members: each member's state (params,
    # BatchNorm statistics, optimizer state with its own hyperparameters, dropout key) has the
    # bits init_on_mesh gives its seed and optimizer alone, a seed past 2**32 included.
    if model == "mlp":
        network, x = mlp(), data(64)[0]
    else:
        network = jaxnn.CNN(filters=(3,), dense=(5,), num_outputs=2, batch_norm=True)
        x = np.zeros((40, 7, 7, 1), np.float32)
    members = [
        {"seed": seed, "optimizer": {"name": "momentum", "learning_rate": lr, "momentum": m}}
        for seed, lr, m in ((0, 0.1, 0.9), (3, 0.02, 0.5), (2**32 + 5, 0.1, 0.99))
    ]
    sweep = jaxnn.Sweep(network, members)
    sweep.initialize(x, epochs=3, batch_size=8)
    for i, member in enumerate(members):
        tx = jaxnn.optim.build(member["optimizer"], steps_per_epoch=5, epochs=3)
        alone = init_on_mesh(network, tx, x.shape[1:], seed=member["seed"], mesh=sweep.mesh)
        ours = sweep.member_state(i)
        assert jax.tree.structure(ours) == jax.tree.structure(alone)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(alone), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    key_data = [np.asarray(sweep.member_state(i).rng) for i in range(3)]
    assert not np.array_equal(key_data[0], key_data[2])  # 2**32 + 5 is not seed 0's key


def test_a_cnn_with_batchnorm_and_a_cosine_schedule_matches_single_runs():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(96, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(np.int32)
    model = jaxnn.CNN(filters=(4,), dense=(8,), num_outputs=2, batch_norm=True, dropout_rate=0.1)
    members = [
        {"seed": s, "optimizer": {"name": "adam", "learning_rate": lr, "schedule": sched}}
        for s, lr in ((0, 3e-3), (1, 1e-3))
        for sched in [{"name": "warmup_cosine", "warmup_epochs": 1, "alpha": 0.1}]
    ]
    fit = {"epochs": 2, "batch_size": 20, "validation_split": 0.25}  # a padded last batch
    assert_matches_single_runs(model, members, x, y, fit)


def test_a_stopped_member_stands_still_while_the_others_go_on():
    x, y = data()
    members = [
        {"seed": 0, "optimizer": {"name": "adam", "learning_rate": lr}} for lr in (3e-3, 1e-3, 3e-4)
    ]
    # Member 1's early stopping fires after its first epoch (patience 0, an impossible delta).
    es = [lambda: [], lambda: [EarlyStopping("val_loss", patience=0, min_delta=10.0)], lambda: []]
    sweep = jaxnn.Sweep(mlp(), members)
    fit = {"epochs": 3, "batch_size": 32, "validation_split": 0.2, "verbose": 0}
    histories = sweep.fit(x, y, callbacks=[make() for make in es], **fit)
    assert [len(h["loss"]) for h in histories] == [3, 2, 3]
    assert "early stopping after epoch 2" in sweep.records[1].stopped
    single = jaxnn.Trainer(mlp(), optimizer=members[1]["optimizer"], seed=0)
    single.fit(x, y, callbacks=[EarlyStopping("val_loss", patience=0, min_delta=10.0)], **fit)
    assert single.epoch == 2
    assert max_difference(single.state, sweep.member_state(1)) < STATE_ATOL
    for i in (0, 2):
        other = jaxnn.Trainer(mlp(), optimizer=members[i]["optimizer"], seed=0)
        other.fit(x, y, **fit)
        assert max_difference(other.state, sweep.member_state(i)) < STATE_ATOL


def test_a_diverging_member_stops_with_its_reason_and_the_others_train_on():
    x, y = data()
    members = [{"seed": 0, "optimizer": {"name": "sgd", "learning_rate": lr}} for lr in (0.1, 1e30)]
    sweep = jaxnn.Sweep(mlp(batch_norm=False, dropout_rate=0.0), members)
    histories = sweep.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert "diverged in epoch 1" in sweep.records[1].stopped
    assert histories[1] == {} and len(histories[0]["loss"]) == 2
    single = jaxnn.Trainer(
        mlp(batch_norm=False, dropout_rate=0.0), optimizer=members[0]["optimizer"]
    )
    single.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert max_difference(single.state, sweep.member_state(0)) < STATE_ATOL


def test_each_member_has_its_own_plateau_schedule():
    x, y = data()
    members = [{"seed": s, "optimizer": {"name": "adam", "learning_rate": 1e-2}} for s in (0, 1)]

    def plateau():  # halves the rate after every epoch but the first (none improves by 1.0)
        return [ReduceLROnPlateau("val_accuracy", mode="max", patience=0, min_delta=1.0)]

    fit = {"epochs": 3, "batch_size": 32, "validation_split": 0.2}
    _, histories = assert_matches_single_runs(mlp(), members, x, y, fit, callbacks=plateau)
    # An epoch's logged rate is the one it trained with; the plateau acts after the logs.
    for history in histories:
        assert history["learning_rate"] == pytest.approx([1e-2, 1e-2, 5e-3])


def test_best_variables_are_the_best_epoch_by_the_monitor():
    x, y = data()
    sweep = jaxnn.Sweep(mlp(), CASES["seeds"][:2], monitor="val_loss", monitor_mode="min")
    sweep.fit(x, y, epochs=1, batch_size=32, validation_split=0.2, verbose=0)
    first = [jax.device_get(sweep.member_state(i).params) for i in range(2)]
    sweep.fit(x, y, epochs=2, batch_size=32, validation_split=0.2, verbose=0)
    for i in range(2):
        history = sweep.member_loops[i].history["val_loss"]
        best_epoch = int(np.argmin(history)) + 1
        assert sweep.records[i].best_epoch == best_epoch
        best = sweep.best_variables(i)["params"]
        if best_epoch == 1:
            assert max_difference(best, first[i]) == 0.0
        if best_epoch == 3:
            assert max_difference(best, sweep.member_state(i).params) == 0.0


def test_evaluate_and_predict_give_every_members_results():
    x, y = data()
    sweep = jaxnn.Sweep(mlp(), CASES["seeds"])
    sweep.fit(x, y, epochs=1, batch_size=32, verbose=0)
    probabilities = sweep.predict(x[:7])
    assert probabilities.shape == (2, 7, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    results = sweep.evaluate(x, y)
    assert len(results) == 2
    for i, result in enumerate(results):
        predicted = sweep.predict(x)[i].argmax(-1)
        assert result["accuracy"] == pytest.approx(float((predicted == y).mean()), abs=1e-6)


def test_only_the_numbers_that_differ_are_traced():
    specs = check_members(CASES["momentum"])
    values = traced_values([s.optimizer for s in specs])
    assert values == {"momentum": [0.5, 0.95]}
    assert traced_values([s.optimizer for s in check_members(CASES["seeds"])]) == {}


@pytest.mark.parametrize(
    ("second", "key"),
    [
        ({"name": "sgd"}, "name"),
        ({"name": "adam", "l2": 1e-4}, "l2 on"),
        ({"name": "adam", "schedule": {"name": "cosine"}}, "schedule"),
    ],
)
def test_members_that_cannot_share_a_program_are_refused_with_the_key(second, key):
    with pytest.raises(ValueError, match=f"members\\[1\\].optimizer: '{key}'"):
        jaxnn.Sweep(mlp(), [{"seed": 0, "optimizer": {"name": "adam"}}, {"optimizer": second}])


def test_callbacks_need_one_list_per_member_and_no_shared_objects():
    x, y = data()
    sweep = jaxnn.Sweep(mlp(), CASES["seeds"][:2])
    with pytest.raises(ValueError, match="one list of callbacks per member"):
        sweep.fit(x, y, callbacks=[[]], verbose=0)
    shared = EarlyStopping()
    with pytest.raises(ValueError, match="callbacks of its own"):
        sweep.fit(x, y, callbacks=[[shared], [shared]], verbose=0)


_EIGHT_DEVICES = """
import os, sys
sys.path.insert(0, {tests!r})
import numpy as np
from test_sweep import CASES, assert_matches_single_runs, data, mlp
import jax
assert jax.device_count() == 8, jax.devices()
x, y = data(n=320)
fit = {{"epochs": 2, "batch_size": 32, "validation_split": 0.25}}
# 1 member: a (data 8, member 1) mesh, its batches over all 8 devices;
# 2 members: (data 4, member 2), each half of the devices trains one member.
for members in (CASES["momentum"][:1], CASES["momentum"]):
    sweep, _ = assert_matches_single_runs(mlp(), members, x, y, fit)
    print(dict(sweep.mesh.shape))
print("ok on", jax.device_count(), "devices")
"""


def test_member_mesh_splits_members_over_as_many_devices_as_divide_them():
    devices = [jax.devices()[0]] * 8  # only the shape is looked at
    shape = {k: jaxnn.sharding.member_mesh(k, devices).devices.shape for k in (1, 3, 4, 8, 12)}
    assert shape == {1: (8, 1), 3: (8, 1), 4: (2, 4), 8: (1, 8), 12: (2, 4)}


def test_members_match_single_runs_on_eight_host_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    script = _EIGHT_DEVICES.format(tests=str(REPO / "tests"))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok on 8 devices" in done.stdout
    assert "{'data': 8, 'member': 1}" in done.stdout and "{'data': 4, 'member': 2}" in done.stdout
