import io
import os
import select

import jax
import numpy as np
import optax
import pytest

from jaxnn import MLP, Callback, EarlyStopping, ReduceLROnPlateau, Trainer, optim
from jaxnn import metrics as metrics_lib
from jaxnn.callbacks import ProgressLogger, close_progress_bars, format_logs, format_value
from jaxnn.loop import TrainLoop


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


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so ProgressLogger draws its bar into it."""

    def isatty(self):
        return True


def progress(position=0, steps=422, optimizer=None, refresh_s=0.0, stream=None):
    """A ProgressLogger at the beginning of an epoch (resumed at ``position``) and its loop."""
    trainer, _, _ = small_trainer(optimizer)
    loop = TrainLoop(state=trainer.state, position=position, steps_per_epoch=steps)
    loop.metrics = trainer.empty_train_metrics()
    logger = ProgressLogger(steps, 2, refresh_s=refresh_s, stream=stream or Terminal())
    logger.on_epoch_begin(loop, 0)
    return logger, loop


def test_progress_after_a_mid_epoch_resume_starts_there_and_rates_only_new_steps():
    logger, loop = progress(position=205)
    assert "205/422" in logger.stream.getvalue()
    for done in (206, 207, 208):
        logger.on_dispatch_end(loop, done, loop.metrics)
    shown = logger._bar.format_dict
    # the average rate and the ETA are (n - initial) steps over this process's time
    assert (shown["n"], shown["initial"]) == (208, 205)
    assert "208/422" in logger.stream.getvalue().rsplit("\r", 1)[-1]
    logger.close()


def test_progress_counts_every_dispatch_and_fetches_metrics_only_every_refresh(monkeypatch):
    logger, loop = progress(steps=50, refresh_s=3600.0)
    fetches = []
    compute = metrics_lib.compute_collection
    monkeypatch.setattr(
        metrics_lib, "compute_collection", lambda m: fetches.append(1) or compute(m)
    )
    counted = []
    for done in range(5, 51, 5):
        logger.on_dispatch_end(loop, done, loop.metrics)
        counted.append(logger._bar.n if logger._bar is not None else None)
    assert counted == list(range(5, 51, 5))
    assert len(fetches) == 1  # the epoch's last dispatch only: refresh_s has not passed before
    logger.close()


def test_progress_on_a_terminal_that_reports_zero_columns_draws_an_80_column_bar():
    controller, terminal = os.openpty()  # a new pty reports 0 rows and 0 columns
    stream = os.fdopen(terminal, "w")
    try:
        assert os.get_terminal_size(terminal).columns == 0
        logger, loop = progress(steps=10, stream=stream)
        logger.on_dispatch_end(loop, 3, loop.metrics)
        stream.flush()
        written = b""
        while select.select([controller], [], [], 0.5)[0]:
            written += os.read(controller, 65536)
        logger.close()
    finally:
        stream.close()
        os.close(controller)
    last = written.decode().rsplit("\r", 1)[-1]
    assert "3/10" in last and len(last) == 80, last


def test_close_progress_bars_clears_the_bar_so_a_message_starts_on_a_fresh_line():
    logger, loop = progress(steps=10)
    logger.on_dispatch_end(loop, 4, loop.metrics)
    assert "4/10" in logger.stream.getvalue()
    close_progress_bars()  # what jaxnn.cli does on KeyboardInterrupt, before its message
    assert logger._bar is None
    after_bar = logger.stream.getvalue().rsplit("4/10", 1)[-1]
    assert after_bar.endswith("\r") and after_bar.rsplit("\r", 2)[-2].strip() == ""
    close_progress_bars()  # closing twice is harmless


def test_progress_shows_lr_only_when_the_optimizer_has_one():
    for optimizer, shown in [(None, True), (optax.adam(0.01), False)]:
        logger, loop = progress(steps=4, optimizer=optimizer)
        logger.on_dispatch_end(loop, 4, loop.metrics)
        assert ("lr=" in logger.stream.getvalue()) is shown
        logger.close()


def test_logged_numbers_use_thousands_separators_and_fixed_decimals_not_exponents():
    logs = {"loss": 23320.54321, "accuracy": 0.901149, "learning_rate": 1e-3, "epoch_time_s": 3.0}
    assert format_logs(logs) == "loss: 23,320.5432 - accuracy: 0.9011 - learning_rate: 0.001"
    assert format_value("train_examples_per_s", 23320.4) == "23,320"
    assert format_value("wall_time_s", 12345.67) == "12,345.7"
    assert format_value("best_epoch", 12) == "12"
    assert format_value("test_accuracy", 0.99123) == "0.9912"


def _scripted_val_loss(values):
    class FakeValidation(Callback):
        """Sets val_loss from a script, before EarlyStopping and the checkpoint read it."""

        def on_epoch_end(self, t, epoch, logs):
            logs["val_loss"] = values[epoch]

    return FakeValidation()


def _fit_with_checkpoints(workdir, epochs, values, keep_best=1, resume=False):
    from jaxnn.callbacks import Checkpoint
    from jaxnn.checkpoint import Checkpointer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    trainer = Trainer(MLP(features=(4,), num_outputs=2), optimizer=optax.adam(0.05), seed=0)
    trainer.initialize(x, batch_size=8, epochs=epochs)
    stopper = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    checkpointer = Checkpointer(
        workdir, keep_latest=1, keep_best=keep_best, best_metric="val_loss", best_mode="min"
    )
    checkpoint = Checkpoint(checkpointer, {"EarlyStopping": stopper})
    if resume:
        trainer.restore(checkpoint.resume(trainer.state, trainer.empty_train_metrics()))
    callbacks = [_scripted_val_loss(values), stopper, checkpoint]
    trainer.fit(x, y, epochs=epochs - trainer.epoch, batch_size=8, verbose=0, callbacks=callbacks)
    checkpointer.close()
    return trainer, stopper


def test_a_resumed_run_that_stops_early_restores_the_best_epoch_from_its_checkpoint(tmp_path):
    values = [0.5, 0.4, 0.45, 0.41, 0.3, 0.2]  # best at epoch 1; stops after epoch 3
    whole, _ = _fit_with_checkpoints(tmp_path / "whole", 6, values)
    assert whole.epoch == 4
    # The same run cut after epoch 2 (its best, epoch 1, is no longer the latest checkpoint),
    # then resumed in a new process' objects.
    _fit_with_checkpoints(tmp_path / "cut", 3, values)
    resumed, stopper = _fit_with_checkpoints(tmp_path / "cut", 6, values, resume=True)
    assert resumed.epoch == 4 and stopper.best_epoch == 1 and stopper.stopped_epoch == 3
    assert stopper.best_step == 10  # 2 epochs of 5 steps
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.state.params, whole.state.params)


def test_a_resumed_run_whose_best_checkpoint_is_gone_says_it_keeps_the_last_weights(tmp_path):
    values = [0.5, 0.4, 0.45, 0.41, 0.3, 0.2]
    _fit_with_checkpoints(tmp_path, 3, values, keep_best=0)
    with pytest.warns(
        UserWarning, match=r"EarlyStopping: the checkpoint of its best epoch \(step 10\)"
    ):
        resumed, stopper = _fit_with_checkpoints(tmp_path, 6, values, keep_best=0, resume=True)
    assert stopper.stopped_epoch == 3 and stopper.best_variables is None


def test_step_checkpoints_fall_every_n_steps_from_the_start(tmp_path):
    # 40 examples in batches of 8: 5 steps per epoch, dispatches of 2 end at steps 2, 4, 5 (the
    # epoch's end), 7, 9, 10. Every 3 steps: saves at 4 (crossing 3), 5 (epoch end), 7 (crossing
    # 6), 9 (crossing 9) and 10 (epoch end) - not at 2, before the first 3 steps are done.
    from jaxnn.callbacks import Checkpoint
    from jaxnn.checkpoint import Checkpointer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    trainer = Trainer(MLP(features=(4,), num_outputs=2), steps_per_dispatch=2, seed=0)
    with Checkpointer(tmp_path, keep_latest=10, async_save=False) as checkpointer:
        checkpoint = Checkpoint(checkpointer, {}, every_steps=3)
        trainer.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[checkpoint])
        assert checkpointer.all_steps() == [4, 5, 7, 9, 10]
