"""Checkpoints: bitwise round trips, preservation policy, damaged files, mismatches, write errors,
template-free restore, and a checkpoint saved on 8 devices read back on 1."""

import asyncio
import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from jaxnn.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointFallbackWarning,
    CheckpointMismatchError,
    load_variables,
    restore,
)
from jaxnn.models import CNN, MLP
from jaxnn.state import create_train_state

REPO = Path(__file__).resolve().parents[1]


def trained_state(model=None, sample=None, *, seed=0, shift=0.0):
    """A state after one optimizer update, so params, mu, nu, count and step are all non-trivial
    (with inject_hyperparams, the optax state holds an InjectHyperparamsState)."""
    model = model or MLP(features=(8,), num_outputs=3)
    sample = jnp.zeros((1, 4)) if sample is None else sample
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    state = create_train_state(model, tx, sample, seed=seed)
    params = jax.tree.map(lambda p: p + shift, state.params)
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    return state.replace(
        step=state.step + 1, params=optax.apply_updates(params, updates), opt_state=opt_state
    )


def assert_bitwise_equal(actual, expected):
    actual_leaves, actual_def = jax.tree_util.tree_flatten_with_path(actual)
    expected_leaves, expected_def = jax.tree_util.tree_flatten_with_path(expected)
    assert actual_def == expected_def
    for (path, a), (_, e) in zip(actual_leaves, expected_leaves, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert (a.shape, a.dtype) == (e.shape, e.dtype), jax.tree_util.keystr(path)
        assert a.tobytes() == e.tobytes(), jax.tree_util.keystr(path)


def step_dir(workdir, step):
    return Path(workdir) / "checkpoints" / str(step)


def test_round_trip_is_bitwise_for_every_leaf_and_the_extra_dict(tmp_path):
    state = trained_state()
    assert float(np.abs(np.asarray(state.opt_state.inner_state[0].mu["Dense_0"]["kernel"])).sum())
    extra = {"epoch": 3, "history": {"loss": [1.5, 0.25]}, "callbacks": {"es": {"wait": 2}}}
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.save(5, state, extra=extra, metrics={"loss": 0.25})
        checkpointer.wait()
        template = trained_state(seed=1)  # same structure, other values
        restored, restored_extra, step = checkpointer.restore(template)
    assert step == 5
    assert restored_extra == extra
    assert isinstance(restored, type(state))
    assert_bitwise_equal(restored, state)
    assert restored.rng.dtype == jnp.uint32
    assert int(restored.opt_state.count) == 1  # InjectHyperparamsState survives as itself
    assert float(restored.opt_state.hyperparams["learning_rate"]) == pytest.approx(1e-2)


def test_restore_by_step_and_from_a_new_process_object(tmp_path):
    states = {step: trained_state(shift=0.1 * step) for step in (1, 2, 3)}
    checkpointer = Checkpointer(tmp_path, keep_latest=3, async_save=False)
    for step, state in states.items():
        checkpointer.save(step, state, extra={"epoch": step})
    checkpointer.close()
    reopened = Checkpointer(tmp_path, keep_latest=3)
    assert reopened.all_steps() == [1, 2, 3]
    restored, extra, step = reopened.restore(trained_state(), 2)
    assert (step, extra) == (2, {"epoch": 2})
    assert_bitwise_equal(restored, states[2])
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 7.*\[1, 2, 3\]"):
        reopened.restore(trained_state(), 7)
    reopened.close()


@pytest.mark.parametrize(
    "mode, values, kept, best",
    [
        # max: step 2 is best, steps 5 and 6 are the latest two
        ("max", [0.1, 0.9, 0.3, 0.2, 0.4, 0.35], [2, 5, 6], 2),
        # min: step 1 is best
        ("min", [0.1, 0.9, 0.3, 0.2, 0.4, 0.35], [1, 5, 6], 1),
        # the best is also one of the latest: nothing else survives
        ("max", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [5, 6], 6),
    ],
)
def test_only_the_latest_n_and_the_best_k_stay_on_disk(tmp_path, mode, values, kept, best):
    state = trained_state()
    checkpointer = Checkpointer(
        tmp_path, keep_latest=2, keep_best=1, best_metric="score", best_mode=mode
    )
    for step, value in enumerate(values, start=1):
        checkpointer.save(step, state, extra={}, metrics={"score": value, "other": -value})
    checkpointer.wait()
    on_disk = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert on_disk == kept
    assert checkpointer.all_steps() == kept
    assert checkpointer.best_step() == best
    assert checkpointer.restore(state, "best")[2] == best
    checkpointer.close()


def test_best_k_survives_a_restart_and_saves_without_the_metric(tmp_path):
    state = trained_state()
    first = Checkpointer(tmp_path, keep_latest=2, keep_best=2, best_metric="acc")
    for step, acc in [(1, 0.7), (2, 0.9), (3, 0.2)]:
        first.save(step, state, extra={}, metrics={"acc": acc})
    first.close()
    # A resumed run: the ranking of steps 1-3 must come from disk, and mid-epoch saves
    # (no metrics, or metrics without "acc", or a NaN) are never ranked.
    second = Checkpointer(tmp_path, keep_latest=2, keep_best=2, best_metric="acc")
    second.save(4, state, extra={})
    second.save(5, state, extra={}, metrics={"loss": 0.1})
    second.save(6, state, extra={}, metrics={"acc": float("nan")})
    second.wait()
    assert second.all_steps() == [1, 2, 5, 6]
    assert second.best_step() == 2
    second.close()
    assert Checkpointer(tmp_path, best_metric="acc").best_step() == 2


def test_without_a_best_metric_only_the_latest_n_are_kept(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep_latest=3, keep_best=5)
    for step in range(1, 7):
        checkpointer.save(step, trained_state(), extra={}, metrics={"acc": 1.0 / step})
    assert checkpointer.all_steps() == [4, 5, 6]
    assert checkpointer.best_step() == 6
    checkpointer.close()


def saved_run(tmp_path, steps=(1, 2, 3)):
    states = {step: trained_state(shift=0.25 * step) for step in steps}
    with Checkpointer(tmp_path, keep_latest=len(steps)) as checkpointer:
        for step, state in states.items():
            checkpointer.save(step, state, extra={"epoch": step})
    return states


def largest_file(directory, pattern="**/*"):
    files = [p for p in Path(directory).glob(pattern) if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def flip_bytes(path, count=400):
    """XORs ``count`` bytes in the middle of the file with 0xFF (bits flipped on disk)."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - count // 2)
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# A failed tensorstore read leaves a callback for an already-closed asyncio loop inside orbax;
# Python reports it as "unraisable". It is orbax's noise, not a failure of the fall-back.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "damage",
    [
        # the largest file of the step (the tree's JSON metadata), cut in half
        lambda step: truncate(largest_file(step)),
        # the largest array-data file, cut in half. Orbax's OCDBT store reads state/d/; the
        # per-process copy under state/ocdbt.process_0/d/ can have the same size, and damaging
        # that one (glob order picked it about 1 run in 6) is not a damage a restore sees.
        lambda step: truncate(largest_file(step / "state" / "d")),
        # an array-data file deleted
        lambda step: largest_file(step / "state" / "d").unlink(),
        # the JSON item deleted
        lambda step: (step / "extra" / "metadata").unlink(),
        # bits flipped in the middle of the array data
        lambda step: flip_bytes(largest_file(step / "state" / "d")),
    ],
    ids=["truncated-largest", "truncated-data", "deleted-data", "deleted-extra", "flipped-data"],
)
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    states = saved_run(tmp_path)
    damage(step_dir(tmp_path, 3))
    checkpointer = Checkpointer(tmp_path, keep_latest=3)
    with pytest.warns(CheckpointFallbackWarning) as caught:
        restored, extra, step = checkpointer.restore_latest_good(trained_state())
    assert (step, extra) == (2, {"epoch": 2})
    assert_bitwise_equal(restored, states[2])
    assert len(caught) == 1
    assert str(step_dir(tmp_path, 3).absolute()) in str(caught[0].message)
    # The damaged step is moved aside, not deleted, and its number can be saved again (a run
    # that fell back trains through that step once more).
    moved = tmp_path / "damaged_checkpoints" / "3"
    assert moved.is_dir() and str(moved) in str(caught[0].message)
    assert checkpointer.all_steps() == [1, 2]
    checkpointer.save(3, states[3], extra={"epoch": 3}, force=True)
    assert checkpointer.all_steps() == [1, 2, 3]
    checkpointer.close()


def wrong_digest(step):
    """Changes the digest recorded with a step, as a corruption that still decodes looks."""
    extra = step / "extra" / "metadata"
    record = json.loads(extra.read_text())
    assert len(record["_checkpoint"]["digest"]) == 64
    record["_checkpoint"]["digest"] = "0" * 64
    extra.write_text(json.dumps(record))


def test_arrays_that_do_not_match_their_saved_digest_are_not_restored(tmp_path):
    # Corruption that still decodes (a bit flip inside raw array bytes) reads back as wrong
    # numbers: the digest recorded at save is what catches it.
    saved_run(tmp_path)
    assert_bitwise_equal(restore(tmp_path, 3)["params"], trained_state(shift=0.75).params)
    wrong_digest(step_dir(tmp_path, 3))
    with pytest.raises(CheckpointError, match="do not match the sha256 digest"):
        restore(tmp_path, 3)  # the template-free restore checks it too
    with Checkpointer(tmp_path, keep_latest=3) as checkpointer:
        with pytest.raises(CheckpointError, match="do not match the sha256 digest"):
            checkpointer.restore(trained_state(), 3)
        with pytest.warns(CheckpointFallbackWarning, match="digest"):
            _, _, step = checkpointer.restore_latest_good(trained_state())
        assert step == 2


def test_every_checkpoint_unreadable_is_an_error_listing_them(tmp_path):
    saved_run(tmp_path, steps=(1, 2))
    for step in (1, 2):
        truncate(largest_file(step_dir(tmp_path, step)))
    checkpointer = Checkpointer(tmp_path)
    with pytest.warns(CheckpointFallbackWarning), pytest.raises(CheckpointError) as error:
        checkpointer.restore_latest_good(trained_state())
    message = str(error.value)
    assert "none of the 2 checkpoints" in message
    for step in (1, 2):
        assert str(step_dir(tmp_path, step).absolute()) in message
    checkpointer.close()


def test_invalid_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="best_mode: expected 'max' or 'min'; got 'best'"):
        Checkpointer(tmp_path, best_mode="best")
    with pytest.raises(ValueError, match="keep_latest: expected an integer >= 1; got 0"):
        Checkpointer(tmp_path, keep_latest=0)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, trained_state(), extra={})
        checkpointer.wait()
        # orbax skips a step that is not newer than the latest (save returns False) ...
        assert checkpointer.save(1, trained_state(shift=1.0), extra={}) is False
        # ... and refuses to overwrite one when forced
        with pytest.raises(ValueError, match="step: a checkpoint 1 already exists"):
            checkpointer.save(1, trained_state(shift=1.0), extra={}, force=True)
        assert_bitwise_equal(checkpointer.restore(trained_state())[0], trained_state())
        with pytest.raises(
            ValueError, match="step: expected a step number, 'latest' or 'best'; got 'first'"
        ):
            checkpointer.restore(trained_state(), "first")


def test_no_checkpoints_at_all_gives_none(tmp_path):
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.restore_latest_good(trained_state()) is None
        assert checkpointer.all_steps() == []
        assert checkpointer.latest_step() is None
        assert checkpointer.best_step() is None


def test_an_interrupted_save_is_invisible(tmp_path):
    """Orbax writes into ``<step>.orbax-checkpoint-tmp*`` and renames when complete: a folder
    left by a crash mid-save is neither listed nor restored."""
    states = saved_run(tmp_path, steps=(1, 2))
    partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "state").mkdir()
    (partial / "state" / "_METADATA").write_text("{")
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.all_steps() == [1, 2]
        restored, _, step = checkpointer.restore_latest_good(trained_state())
    assert step == 2
    assert_bitwise_equal(restored, states[2])


@pytest.mark.parametrize(
    "template_model, template_dtype, expected",
    [
        # a wider hidden layer
        (
            MLP(features=(16,), num_outputs=3),
            None,
            ["params/Dense_0/kernel: saved (4, 8) float32, expected (4, 16) float32"],
        ),
        # one more layer than saved: Dense_2 is missing from the checkpoint
        (
            MLP(features=(8, 8), num_outputs=3),
            None,
            ["params/Dense_2/kernel: missing from the checkpoint", "Dense_1/kernel: saved (8, 3)"],
        ),
        # one layer fewer: Dense_1 of the checkpoint is unexpected
        (
            MLP(features=(), num_outputs=3),
            None,
            ["params/Dense_1/kernel: in the checkpoint, not in the template"],
        ),
        # same shapes, another dtype
        (
            MLP(features=(8,), num_outputs=3),
            jnp.bfloat16,
            ["params/Dense_0/kernel: saved (4, 8) float32, expected (4, 8) bfloat16"],
        ),
    ],
    ids=["wider", "extra-layer", "missing-layer", "dtype"],
)
def test_restoring_into_another_model_names_the_keys(
    tmp_path, template_model, template_dtype, expected
):
    saved_run(tmp_path, steps=(1,))
    template = trained_state(template_model)
    if template_dtype is not None:
        template = template.replace(
            params=jax.tree.map(lambda p: p.astype(template_dtype), template.params)
        )
    checkpointer = Checkpointer(tmp_path)
    for restore_fn in (checkpointer.restore, checkpointer.restore_latest_good):
        with pytest.raises(CheckpointMismatchError) as error:
            restore_fn(template)
        for fragment in expected:
            assert fragment in str(error.value)
        assert str(step_dir(tmp_path, 1).absolute()) in str(error.value)
    checkpointer.close()


def test_a_workdir_that_cannot_be_written_fails_in_the_constructor(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"workdir: cannot write checkpoints to .*a_file"):
        Checkpointer(blocker / "run")


def test_a_read_only_workdir_fails_in_the_constructor(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    workdir.chmod(0o500)
    try:
        if os.access(workdir, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        with pytest.raises(CheckpointError, match=r"run/checkpoints.*Permission denied"):
            Checkpointer(workdir)
    finally:
        workdir.chmod(0o700)


def test_a_full_disk_during_a_save_is_a_checkpoint_error_and_earlier_steps_survive(
    tmp_path, monkeypatch
):
    state = trained_state()
    checkpointer = Checkpointer(tmp_path, keep_latest=1)
    checkpointer.save(1, state, extra={"epoch": 1})
    checkpointer.wait()

    async def disk_full(self, x, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
    with pytest.raises(CheckpointError) as error:
        checkpointer.save(2, trained_state(shift=1.0), extra={"epoch": 2})
        checkpointer.wait()  # the write runs in the background: its error surfaces here
    message = str(error.value)
    assert str(tmp_path / "checkpoints") in message
    assert "checkpoint 2" in message and "no space left" in message
    assert isinstance(error.value.__cause__, OSError)
    monkeypatch.undo()

    # the failed step left only a temporary folder; step 1 was not deleted by keep_latest=1
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "1" in names and "2" not in names
    assert checkpointer.all_steps() == [1]
    restored, extra, step = checkpointer.restore_latest_good(trained_state(seed=3))
    assert (step, extra) == (1, {"epoch": 1})
    assert_bitwise_equal(restored, state)
    # and saving works again once there is space
    checkpointer.save(3, state, extra={"epoch": 3})
    assert checkpointer.all_steps() == [3]
    checkpointer.close()


def never_retrieved(error: BaseException) -> None:
    """What a failed orbax write leaves behind: tensorstore fails the sibling writes too, after
    orbax stopped awaiting them, into asyncio futures nobody reads; asyncio logs each one when
    Python collects it (here at once; in a run at any later moment, even after its last line)."""
    loop = asyncio.new_event_loop()
    loop.create_future().set_exception(error)
    loop.close()


def test_write_errors_nobody_awaits_any_more_are_not_logged_again(tmp_path, caplog, monkeypatch):
    checkpointer = Checkpointer(tmp_path)
    ours = ValueError(
        'OUT_OF_RANGE: Error writing "params.w/0" in OCDBT database at local file '
        f'"{checkpointer.directory}/2.orbax-checkpoint-tmp/state/ocdbt.process_0/": File too '
        "large [os_error_code='27']"
    )
    elsewhere = ValueError("OUT_OF_RANGE: an error about some other folder")
    monkeypatch.delenv("JAXNN_TRACEBACK", raising=False)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        never_retrieved(ours)  # save/wait raise it as the one CheckpointError
        never_retrieved(elsewhere)  # not ours to hide
        monkeypatch.setenv("JAXNN_TRACEBACK", "1")  # asks for everything
        never_retrieved(ours)
    logged = [r.exc_info[1] for r in caplog.records if "never retrieved" in r.getMessage()]
    assert logged == [elsewhere, ours]
    checkpointer.close()


def test_a_write_error_orbax_raises_while_closing_is_a_checkpoint_error(tmp_path, monkeypatch):
    checkpointer = Checkpointer(tmp_path)
    manager_close = checkpointer._manager.close

    def close_after_a_failed_write():
        manager_close()
        raise ValueError("OUT_OF_RANGE: Error writing ...: File too large [os_error_code='27']")

    monkeypatch.setattr(checkpointer._manager, "close", close_after_a_failed_write)
    with pytest.raises(CheckpointError, match=r"could not save a checkpoint \(File too large\)"):
        checkpointer.close()


# The fault drill's disk-full case, made deterministic: the write fails with EFBIG as on a full
# disk, and a sibling write's error, left unread by orbax, is collected after the error line
# (under load that happened on its own, and the command's last line was that ValueError).
DISK_FULL_COMMAND = """
import asyncio, atexit, gc, resource, signal
import numpy as np
from jaxnn.checkpoint import Checkpointer, CheckpointError
from jaxnn.cli import main
from jaxnn.config import base_config

unread = []
atexit.register(lambda: (unread.clear(), gc.collect()))

def runner(config, workdir, *, stop=None):
    checkpointer = Checkpointer(workdir)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # writes past 2 KiB fail
    noise = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    checkpointer.save(1, {"w": noise})  # 16 KiB that do not compress
    try:
        checkpointer.wait()
    except CheckpointError as error:
        loop = asyncio.new_event_loop()
        unread.append(loop.create_future())
        unread[-1].set_exception(error.__cause__)
        loop.close()
        raise

main(base_config, "unused", runner=runner)
"""


def test_a_full_disk_ends_the_command_with_its_one_error_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAXNN_COMPILATION_CACHE": "off"}
    env.pop("JAXNN_TRACEBACK", None)
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL_COMMAND, f"--workdir={tmp_path}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert lines[-1].startswith(
        f"error: {tmp_path / 'checkpoints'}: could not save checkpoint 1 (File too large)"
    ), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ValueError" not in result.stderr
    assert not (tmp_path / "checkpoints" / "1").exists()


def cnn_state(shift):
    model = CNN(filters=(4,), dense=(8,), num_outputs=3, batch_norm=True)
    state = trained_state(model, jnp.zeros((1, 8, 8, 1)), shift=shift)
    # non-zero statistics, so the outputs depend on batch_stats being restored
    batch_stats = jax.tree.map(lambda s: s + 0.5 + shift, state.batch_stats)
    return model, state.replace(batch_stats=batch_stats)


def test_restore_without_template_gives_the_best_models_outputs(tmp_path):
    model, best = cnn_state(shift=0.0)
    _, worse = cnn_state(shift=0.3)
    checkpointer = Checkpointer(tmp_path, keep_latest=1, best_metric="val_loss", best_mode="min")
    checkpointer.save(1, best, extra={}, metrics={"val_loss": 0.5})
    checkpointer.save(2, worse, extra={}, metrics={"val_loss": 0.9})
    checkpointer.close()
    x = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
    expected = model.apply(best.variables, x, train=False)
    other = model.apply(worse.variables, x, train=False)
    assert not np.allclose(expected, other)  # the two checkpoints are distinguishable

    variables = restore(tmp_path, "best")
    assert sorted(variables) == ["batch_stats", "params"]
    assert_bitwise_equal(variables, best.variables)
    assert np.asarray(model.apply(variables, x, train=False)).tobytes() == (
        np.asarray(expected).tobytes()
    )
    assert_bitwise_equal(restore(tmp_path, "latest"), worse.variables)
    assert_bitwise_equal(restore(tmp_path, 1), best.variables)
    leaf = jax.tree.leaves(variables)[0]
    assert isinstance(leaf, jax.Array) and leaf.devices() == {jax.devices()[0]}


def test_restore_without_batch_stats_and_bad_arguments(tmp_path):
    states = saved_run(tmp_path, steps=(1, 2))
    variables = restore(tmp_path)
    assert list(variables) == ["params"]  # an MLP has no batch_stats
    assert_bitwise_equal(variables["params"], states[2].params)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 9; the steps on disk are \[1, 2\]"):
        restore(tmp_path, 9)
    with pytest.raises(ValueError, match="which: expected a step number, 'latest' or 'best'"):
        restore(tmp_path, "first")
    with pytest.raises(FileNotFoundError, match="no checkpoints folder"):
        restore(tmp_path / "elsewhere")


def test_restore_finds_the_train_state_inside_a_dict(tmp_path):
    """The trainer's checkpoint callback saves ``{"train_state": ..., "metrics": ...}``."""
    state = trained_state()
    with Checkpointer(tmp_path) as checkpointer:
        tree = {"train_state": state, "metrics": {"count": jnp.zeros((), jnp.int32)}}
        checkpointer.save(1, jax.device_get(tree), extra={})
        restored, _, _ = checkpointer.restore(tree)
    assert_bitwise_equal(restored, tree)
    assert_bitwise_equal(restore(tmp_path)["params"], state.params)


def test_load_variables_copies_only_the_named_layers(tmp_path):
    _, pretrained = cnn_state(shift=0.2)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, pretrained, extra={}, metrics={"val_accuracy": 0.8})
    # a new head (5 outputs), same convolution
    new_model = CNN(filters=(4,), dense=(8,), num_outputs=5, batch_norm=True)
    fresh = create_train_state(new_model, optax.sgd(0.1), jnp.zeros((1, 8, 8, 1)), seed=7).params
    params = load_variables(tmp_path, ["Conv_0"], fresh)
    assert_bitwise_equal(params["Conv_0"], pretrained.params["Conv_0"])
    assert not np.array_equal(fresh["Conv_0"]["kernel"], params["Conv_0"]["kernel"])
    for name in ("Dense_0", "Dense_1"):
        assert_bitwise_equal(params[name], fresh[name])
    assert sorted(params) == sorted(fresh)

    with pytest.raises(KeyError, match=r"'Conv_9'.*available layers: \['BatchNorm_0', 'Conv_0'"):
        load_variables(tmp_path, ["Conv_9"], fresh)
    # the last Dense layer has 3 outputs in the checkpoint, 5 in the new model
    with pytest.raises(ValueError, match=r"layer 'Dense_1'.*Dense_1/kernel: saved \(8, 3\)"):
        load_variables(tmp_path, ["Conv_0", "Dense_1"], fresh)


SAVE_ON_8_DEVICES = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
sys.path.insert(0, sys.argv[2])
from tests.test_checkpoint import trained_state
from jaxnn.checkpoint import Checkpointer

assert jax.device_count() == 8, jax.devices()
state = trained_state(shift=0.75)
replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
state = jax.device_put(state, replicated)
assert len(state.params["Dense_0"]["kernel"].sharding.device_set) == 8
with Checkpointer(sys.argv[1]) as checkpointer:
    checkpointer.save(int(state.step), state, extra={"devices": 8})
leaves = jax.tree_util.tree_flatten_with_path(state)[0]
names = []
for i, (path, leaf) in enumerate(leaves):
    np.save(f"{sys.argv[1]}/leaf_{i}.npy", np.asarray(leaf))
    names.append(jax.tree_util.keystr(path))
json.dump(names, open(f"{sys.argv[1]}/leaves.json", "w"))
"""


def test_a_checkpoint_saved_on_8_devices_restores_on_1(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SAVE_ON_8_DEVICES), str(tmp_path), str(REPO)],
        env=env,
        check=True,
        cwd=REPO,
        timeout=300,
    )
    names = json.loads((tmp_path / "leaves.json").read_text())
    template = trained_state()
    template_leaves = jax.tree_util.tree_flatten_with_path(template)[0]
    assert [jax.tree_util.keystr(path) for path, _ in template_leaves] == names
    expected_leaves = [np.load(tmp_path / f"leaf_{i}.npy") for i in range(len(names))]
    expected = jax.tree.unflatten(jax.tree.structure(template), expected_leaves)

    with Checkpointer(tmp_path) as checkpointer:
        restored, extra, step = checkpointer.restore(template)
    assert (step, extra) == (1, {"devices": 8})
    assert_bitwise_equal(restored, expected)
    kernel = restored.params["Dense_0"]["kernel"]
    assert kernel.sharding.device_set == {jax.devices()[0]}

    variables = restore(tmp_path)
    assert_bitwise_equal(variables, {"params": expected.params})
    x = jnp.ones((2, 4))
    model = MLP(features=(8,), num_outputs=3)
    np.testing.assert_array_equal(
        model.apply(variables, x, train=False),
        model.apply({"params": expected.params}, x, train=False),
    )
