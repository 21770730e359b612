"""Compiling a fit's first train and evaluate calls in background threads.

A cold ``fit`` spends its first seconds compiling, one thing after another: the state's
initialisation, a few small eager operations, the train step, later the evaluate step. XLA
compiles without holding Python's GIL, so the steps can compile in threads while the main thread
initialises the state: they need only its shapes and shardings
(``jax.stages.Lowered.out_info``), not its values. ``jax.jit`` keeps what ``lower(...).compile()``
built, so the first real call finds its executable ready, provided its arguments match the
abstract ones exactly (shapes, dtypes, weak types, shardings, static arguments). When they do not,
the call compiles as it always did: only the thread's work is lost, never a result changed.

Example::

    background = Precompiler()
    background.start("train", steps.train, lambda: (args, {"k": 32, "masked": False}))
    background.defer("evaluate", steps.evaluate, lambda: (eval_args, {"k": 1}))
    ...                             # initialise, plan the epoch
    background.wait("train")        # before steps.train's first call; starts "evaluate"
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["Precompiler", "abstract"]

_log = logging.getLogger(__name__)
# A function returning ``(args, kwargs)`` for ``jit(...).lower``.
Arguments = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


def abstract(tree: Any) -> Any:
    """``tree`` with every array replaced by its ``jax.ShapeDtypeStruct`` (shape, dtype, weak
    type and sharding): what ``jit(...).lower`` needs of it, without holding its buffers (which
    a later call may donate). Python scalars and ``ShapeDtypeStruct`` leaves stay as they are."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=x.sharding, weak_type=x.aval.weak_type
            )
        return x

    return jax.tree.map(leaf, tree)


class Precompiler:
    """Background compilations of jitted functions by name, each awaited before its first call.

    ``start`` lowers (traces) at once in the calling thread and compiles in another thread;
    ``defer`` keeps a compilation until the main thread first waits for another, when it has
    nothing left to do but wait: then it starts, so that its tracing does not hold the GIL
    while the main thread works and its compilation does not take a core from the first.
    """

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._deferred: dict[str, tuple[Any, Arguments]] = {}

    def start(self, name: str, fn: Any, arguments: Arguments) -> None:
        """Lowers the jitted ``fn`` for ``arguments()`` (``(args, kwargs)``: arrays or abstract
        values) here and compiles it in a thread. Any error is left to the real call.

        Compilations deferred before this call belong to an earlier round (a ``fit`` that
        stopped before its first dispatch) and are dropped."""
        self._deferred.clear()
        self.wait(name)
        try:
            args, kwargs = arguments()
            lowered = fn.lower(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the real call raises it, with its own traceback
            _log.debug("lowering %s ahead of its call failed", name, exc_info=True)
            return
        self._spawn(name, lowered.compile)

    def defer(self, name: str, fn: Any, arguments: Arguments) -> None:
        """``start(name, fn, arguments)``, lowering included, in a thread of its own once the
        main thread first waits (``wait``) for another compilation."""
        self._deferred[name] = (fn, arguments)

    def wait(self, name: str) -> None:
        """Starts the deferred compilations, then returns once ``name``'s has finished (at once
        when there is none): called before the function's first call, which would otherwise
        compile it again."""
        for other, (fn, arguments) in list(self._deferred.items()):
            if other != name:
                del self._deferred[other]
                self._spawn(other, lambda fn=fn, arguments=arguments: _lower_compile(fn, arguments))
        self._deferred.pop(name, None)
        thread = self._threads.pop(name, None)
        if thread is not None:
            thread.join()

    def _spawn(self, name: str, work: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                work()
            except Exception:  # noqa: BLE001 - the real call raises it, with its own traceback
                _log.debug("compiling %s ahead of its call failed", name, exc_info=True)

        # Not a daemon: a process that ends (an error, the end of a script) while XLA compiles
        # waits for it, instead of aborting in C++ as the interpreter shuts down under it.
        thread = threading.Thread(target=run, name=f"jaxnn-compile-{name}")
        self._threads[name] = thread
        thread.start()


def _lower_compile(fn: Any, arguments: Arguments) -> None:
    args, kwargs = arguments()
    fn.lower(*args, **kwargs).compile()
