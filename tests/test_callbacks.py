import jax
import numpy as np
import optax
import pytest

from jaxnn import MLP, Callback, EarlyStopping, ReduceLROnPlateau, Trainer, optim


def small_trainer(optimizer=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    trainer = Trainer(
        MLP(features=(4,), num_outputs=2),
        optimizer=optimizer or {"name": "adam", "learning_rate": 0.01},
    )
    trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return trainer, x, y


def learning_rate(trainer):
    return float(optim.current_learning_rate(trainer.state.opt_state))


@pytest.mark.parametrize(
    "mode, monitor, values",
    [
        # minimise: improves twice, then stalls
        ("min", "val_loss", [1.0, 0.9, 0.95, 0.95, 0.95, 0.97, 0.99, 1.0]),
        # maximise: the same story mirrored
        ("max", "val_accuracy", [0.5, 0.6, 0.55, 0.55, 0.55, 0.5, 0.5, 0.5]),
    ],
)
def test_plateau_halves_the_rate_after_patience_epochs_in_both_modes(mode, monitor, values):
    trainer, _, _ = small_trainer()
    callback = ReduceLROnPlateau(monitor, mode=mode, factor=0.5, patience=3, min_lr=1e-5)
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(trainer, epoch, {monitor: value})
        rates.append(learning_rate(trainer))
    # best at epoch 1; epochs 2, 3, 4 do not improve -> halved after epoch 4;
    # epochs 5, 6, 7 do not improve either -> halved again after epoch 7.
    np.testing.assert_allclose(rates, [0.01] * 4 + [0.005] * 3 + [0.0025], rtol=1e-6)


def test_plateau_respects_min_lr_and_cooldown():
    trainer, _, _ = small_trainer()
    callback = ReduceLROnPlateau("val_loss", factor=0.1, patience=1, cooldown=2, min_lr=2e-4)
    rates = []
    for epoch in range(8):
        callback.on_epoch_end(trainer, epoch, {"val_loss": 1.0})
        rates.append(learning_rate(trainer))
    # Keras' order: epoch 0 sets the best; epoch 1 stalls -> 1e-3 and a cooldown of 2 starts;
    # epoch 2 is in cooldown (counter 2 -> 1, not counted); at epoch 3 the counter reaches 0 so
    # the epoch counts again -> 2e-4 (1e-4 clipped at min_lr); nothing goes below min_lr.
    np.testing.assert_allclose(rates, [1e-2, 1e-3, 1e-3, 2e-4, 2e-4, 2e-4, 2e-4, 2e-4], rtol=1e-5)


def test_plateau_changes_the_rate_without_recompiling_and_shows_in_the_history():
    trainer, x, y = small_trainer()
    before = trainer._steps.train._cache_size()
    callback = ReduceLROnPlateau("loss", factor=0.5, patience=1, min_lr=0.0)
    # A loss that can only be "improved" by more than 10 never improves: halve every epoch.
    callback.min_delta = 10.0
    history = trainer.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])
    # The first epoch sets the best; epochs 2 and 3 each halve, which shows from the next epoch on.
    np.testing.assert_allclose(history["learning_rate"], [0.01, 0.01, 0.005], rtol=1e-6)
    assert learning_rate(trainer) == pytest.approx(0.0025)
    assert trainer._steps.train._cache_size() == before


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    trainer, x, y = small_trainer()
    stopper = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    snapshots = []

    class Record(Callback):
        def on_epoch_end(self, t, epoch, logs):
            snapshots.append(jax.device_get(t.state.params))

    values = iter([0.5, 0.4, 0.45, 0.41, 0.3, 0.2])

    class FakeValidation(Callback):
        """Overrides val_loss with a scripted sequence, before EarlyStopping reads it."""

        def on_epoch_end(self, t, epoch, logs):
            logs["val_loss"] = next(values)

    history = trainer.fit(
        x, y, epochs=6, batch_size=8, verbose=0, callbacks=[Record(), FakeValidation(), stopper]
    )
    assert len(history["loss"]) == 4  # best at the 2nd epoch, 2 more without improvement
    assert stopper.best == pytest.approx(0.4) and stopper.stopped_epoch == 4  # global epochs
    best = snapshots[1]
    jax.tree_util.tree_map(np.testing.assert_array_equal, trainer.state.params, best)
    assert not np.array_equal(snapshots[-1]["Dense_0"]["kernel"], best["Dense_0"]["kernel"])


def test_callback_state_round_trips():
    a = ReduceLROnPlateau("val_loss", patience=2)
    trainer, _, _ = small_trainer()
    for epoch, v in enumerate([1.0, 1.1]):
        a.on_epoch_end(trainer, epoch, {"val_loss": v})
    b = ReduceLROnPlateau("val_loss", patience=2)
    b.load_state_dict(a.state_dict())
    assert (
        b.state_dict()
        == a.state_dict()
        == {"best": 1.0, "best_epoch": 0, "wait": 1, "cooldown_counter": 0}
    )


def test_monitor_missing_from_logs_says_what_is_available():
    trainer, x, y = small_trainer(optimizer=optax.adam(0.01))
    with pytest.raises(KeyError, match="val_loss.*validation_split"):
        trainer.fit(x, y, epochs=1, verbose=0, callbacks=[EarlyStopping("val_loss")])
