"""A fit compiles its steps in background threads, beside the state's initialisation, and its
calls then run exactly those executables: every XLA compilation is counted, with its thread."""

import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnn import CNN, MLP, Trainer
from jaxnn.precompile import Precompiler

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class Compilations:
    """Every XLA compilation while active, as ``(function name, thread name)``."""

    def __enter__(self):
        self.seen: list[tuple[str, str]] = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            self.seen.append((kwargs.get("fun_name"), threading.current_thread().name))

    def threads(self, fun_name: str) -> list[str]:
        return sorted(thread for name, thread in self.seen if name == fun_name)


def data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n)


# Shapes no other test uses: the in-memory executable cache must not already hold these steps.
CASES = {
    # 7 steps of 8 in one scanned dispatch; the last batch padded (no BatchNorm: not masked).
    "mlp": (lambda: MLP(features=(11,), num_outputs=5, dropout_rate=0.1), (13,), 5, 50),
    # One step per dispatch, BatchNorm: the padded last batch compiles its masked variant when
    # the epoch reaches it, in the main thread.
    "cnn_batch_norm": (
        lambda: CNN(filters=(3,), dense=(6,), num_outputs=4, batch_norm=True),
        (6, 6, 1),
        4,
        21,
    ),
}


@pytest.mark.parametrize("initialized_first", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_runs_the_steps_compiled_in_the_background(case, initialized_first):
    make_model, shape, classes, n = CASES[case]
    x, y = data(n + (1 if initialized_first else 0), shape, classes)  # fresh shapes per case
    x_val, y_val = data(17, shape, classes, seed=1)
    trainer = Trainer(make_model(), optimizer=optax.adam(1e-2), metrics=["accuracy"], seed=0)
    if initialized_first:  # as jaxnn.run does: the state exists before fit (restore, summary)
        trainer.initialize(x, batch_size=8, epochs=2)
    with Compilations() as seen:
        history = trainer.fit(
            x, y, epochs=2, batch_size=8, validation_data=(x_val, y_val), verbose=0
        )
    masked = ["MainThread"] if case == "cnn_batch_norm" else []
    assert seen.threads("jit(train)") == sorted(["jaxnn-compile-train", *masked])
    assert seen.threads("jit(evaluate)") == ["jaxnn-compile-evaluate"]
    assert len(history["val_accuracy"]) == 2 and int(trainer.state.step) == 2 * -(-len(x) // 8)


def test_a_later_fit_on_other_shapes_compiles_again_in_the_background():
    x, y = data(40, (9,), 3)
    trainer = Trainer(MLP(features=(7,), num_outputs=3), optimizer=optax.sgd(0.1), seed=0)
    trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    with Compilations() as seen:
        trainer.fit(x[:24], y[:24], epochs=1, batch_size=8, verbose=0)  # 3 steps, not 5
        trainer.fit(x[:24], y[:24], epochs=1, batch_size=8, verbose=0)  # compiled already
    assert seen.threads("jit(train)") == ["jaxnn-compile-train"]


PRECOMPILED_ON_8_DEVICES = """
import threading
import jax, numpy as np, optax
from jaxnn import MLP, Trainer
names = []
def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        names.append(kwargs["fun_name"] + "@" + threading.current_thread().name)
jax.monitoring.register_event_duration_secs_listener(listen)
rng = np.random.default_rng(0)
x, y = rng.normal(size=(100, 5)).astype(np.float32), rng.integers(0, 3, 100)
trainer = Trainer(MLP(features=(8,), num_outputs=3), optimizer=optax.adam(1e-2), seed=0)
trainer.fit(x, y, epochs=2, batch_size=16, validation_data=(x[:30], y[:30]), verbose=0)
print(len(jax.devices()), " ".join(sorted(n for n in names if "train" in n or "evaluate" in n)))
"""


def run_python(code: str, devices: int = 1) -> subprocess.CompletedProcess:
    """``code`` in a fresh CPU process with ``devices`` host devices, its output captured."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXNN_COMPILATION_CACHE": "off"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def test_the_background_compilations_match_the_calls_over_8_devices():
    result = run_python(PRECOMPILED_ON_8_DEVICES, devices=8)
    assert result.returncode == 0, result.stderr[-3000:]
    devices, *compiled = result.stdout.split()
    assert devices == "8"
    assert compiled == [
        "jit(evaluate)@jaxnn-compile-evaluate",
        "jit(train)@jaxnn-compile-train",
    ]


def test_a_failed_background_compilation_leaves_the_error_to_the_call():
    precompiler = Precompiler()
    square = jax.jit(lambda v: v @ v)
    bad = jax.ShapeDtypeStruct((2, 3), jnp.float32)  # (2, 3) @ (2, 3) cannot be traced
    precompiler.start("square", square, lambda: ((bad,), {}))  # no error here
    precompiler.wait("square")
    with pytest.raises(TypeError, match="dot_general"):
        square(jnp.ones((2, 3)))


def test_a_deferred_compilation_starts_when_another_is_awaited():
    precompiler = Precompiler()
    double, triple = jax.jit(lambda v: v * 2.0), jax.jit(lambda v: v * 3.0)
    spec = jax.ShapeDtypeStruct((19,), jnp.float32)
    with Compilations() as seen:
        precompiler.defer("triple", triple, lambda: ((spec,), {}))
        precompiler.wait("triple")  # awaiting itself does not start it: it is dropped
        assert seen.threads("jit(<lambda>)") == []
        precompiler.start("double", double, lambda: ((spec,), {}))
        precompiler.defer("triple", triple, lambda: ((spec,), {}))
        precompiler.wait("double")
        precompiler.wait("triple")
        value = jnp.arange(19.0)
        np.testing.assert_array_equal(double(value), value * 2.0)
        np.testing.assert_array_equal(triple(value), value * 3.0)
    assert seen.threads("jit(<lambda>)") == ["jaxnn-compile-double", "jaxnn-compile-triple"]


def test_a_new_start_drops_what_an_earlier_round_deferred():
    precompiler = Precompiler()
    half, quarter = jax.jit(lambda v: v * 0.5), jax.jit(lambda v: v * 0.25)
    spec = jax.ShapeDtypeStruct((23,), jnp.float32)
    with Compilations() as seen:
        precompiler.start("half", half, lambda: ((spec,), {}))
        precompiler.defer("quarter", quarter, lambda: ((spec,), {}))  # never awaited: a fit
        precompiler.start("half", half, lambda: ((spec,), {}))  # that stopped; the next one
        precompiler.wait("half")
        precompiler.wait("quarter")
    assert seen.threads("jit(<lambda>)") == ["jaxnn-compile-half"]  # once: cached the 2nd time


FIT_STOPPED_BY_AN_ERROR = """
import numpy as np, optax, jaxnn
class Stop(jaxnn.Callback):
    def on_dispatch_end(self, loop, done, metrics):
        raise RuntimeError("stopped by the test")
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 64)
model = jaxnn.CNN(filters=(4, 4), dense=(8,), num_outputs=3, batch_norm=True)
trainer = jaxnn.Trainer(model, optimizer=optax.adam(1e-3))
trainer.fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), callbacks=[Stop()], verbose=0)
"""


def test_an_error_while_a_step_compiles_in_the_background_exits_with_its_traceback():
    # The first dispatch's callback raises while the validation's evaluate still compiles in
    # its thread: the process ends with the error's traceback and exit status 1, not aborted in
    # C++ (status 134) by an interpreter shutting down under the compilation.
    result = run_python(FIT_STOPPED_BY_AN_ERROR)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().endswith("RuntimeError: stopped by the test")
