"""The command line of every experiment module (Flax examples' ``main.py``): flags, config
overrides, signals, multi-process start-up and the compilation cache around ``jaxnn.run.run``.

    python -m experiments.<name> [--workdir=checkpoints/<name>] [--config.<key>=<value> ...]
    python -m experiments.<name> --sweep.<key>="(v1,v2,...)" [--sweep.<key>=...] [--config...]

With ``--sweep.*`` flags the experiment trains every combination of the values
(``jaxnn.sweep_run.run_sweep``) instead of one run.

An experiment module ends with ``main(get_config, "checkpoints/<name>")``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections

from jaxnn import sharding
from jaxnn.callbacks import StopRequest, close_progress_bars
from jaxnn.checkpoint import CheckpointError
from jaxnn.run import run
from jaxnn.workdir import WorkdirBusyError

__all__ = ["enable_compilation_cache", "main"]

# Errors a user can fix: one `error:` line and exit 2, no traceback.
_USER_ERRORS = (
    ValueError,
    PermissionError,
    FileNotFoundError,
    WorkdirBusyError,
    sharding.DistributedInitError,
)


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, so a second run skips XLA compilation.

    Args:
      path: the cache folder; default ``$JAXNN_COMPILATION_CACHE`` or ``~/.cache/jaxnn/xla``.
        ``"off"`` (or the variable set to ``off``) leaves the cache disabled.

    Returns:
      The folder in use, or None when disabled. Every compiled step is cached (JAX's default
      skips those compiling in under a second, which is most of ours).
    """
    path = path or os.environ.get("JAXNN_COMPILATION_CACHE") or Path.home() / ".cache/jaxnn/xla"
    if str(path) == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(path)


def _module_command() -> str:
    """How this process was started, without its flags: ``python -m experiments.<name>``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name if spec is not None else 'experiments.<name>'}"


def _command() -> str:
    """The whole command the user typed, for messages that say how to resume."""
    return f"{_module_command()} {' '.join(sys.argv[1:])}".rstrip()


def define_flags(config: ml_collections.ConfigDict, default_workdir: str) -> None:
    """The experiment's flags: ``--config.*`` (a locked config: an unknown key is an error that
    names close matches), ``--workdir`` and the multi-process ones (or their ``JAXNN_*``
    environment variables)."""
    from absl import flags
    from ml_collections import config_flags

    config.lock()
    try:  # the overrides are parsed here, against the locked config
        config_flags.DEFINE_config_dict("config", config, "The experiment's configuration.")
    except (AttributeError, KeyError) as error:
        print(_unknown_key(error), file=sys.stderr)
        raise SystemExit(2) from None
    flags.DEFINE_string("workdir", default_workdir, "Where the run's files and checkpoints go.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
    flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
    flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for every process to join.")


def _unknown_key(error: BaseException) -> str:
    """The locked config's error (``'learning_rat'`` and a "Did you mean" line) as one line
    naming the whole key the user typed."""
    while isinstance(error, BaseException) and error.args:
        error = error.args[0]
    name, _, hint = str(error).partition("\n")
    name = name.strip("'\"")
    typed = next(
        (
            arg.removeprefix("--").split("=", 1)[0]
            for arg in sys.argv[1:]
            if arg.startswith("--config.") and name in arg.split("=", 1)[0].split(".")
        ),
        f"config.{name}",
    )
    suggestion = re.search(r'Did you mean "([^"]+)"', hint)
    if suggestion:
        parts = typed.split(".")
        parts[parts.index(name)] = suggestion.group(1)
        hint = f" Did you mean --{'.'.join(parts)}?"
    return (
        f"error: --{typed}: unknown config key.{hint if suggestion else ''} "
        f"({_module_command()} --help lists every key)"
    )


def _help(config: ml_collections.ConfigDict, default_workdir: str) -> str:
    """Usage, the experiment's docstring, every config key with its default and description."""
    from jaxnn.confighelp import config_help

    doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
    return (
        f"usage: {_module_command()} [--workdir={default_workdir}] [--config.<key>=<value> ...]"
        f"\n\n{doc}\n\nConfig keys (--config.<key>=<value>; this experiment's defaults):"
        f"{config_help(config)}\n\nOther flags:\n"
        f"    --workdir={default_workdir}\n        where the run's files and checkpoints go\n"
        "    --coordinator_address, --num_processes, --process_id, --distributed_timeout\n"
        "        multi-process runs (or JAXNN_COORDINATOR_ADDRESS, JAXNN_NUM_PROCESSES, "
        "JAXNN_PROCESS_ID)"
    )


def _train(runner: Callable[..., object], stop: StopRequest) -> None:
    from absl import flags

    sharding.initialize_distributed(
        flags.FLAGS.coordinator_address,
        flags.FLAGS.num_processes,
        flags.FLAGS.process_id,
        timeout_s=flags.FLAGS.distributed_timeout,
    )
    enable_compilation_cache()
    runner(flags.FLAGS.config, flags.FLAGS.workdir, stop=stop)


def _interrupted(workdir: str) -> None:
    saved = Path(workdir, "checkpoints")
    groups = sorted(Path(workdir, "groups").glob("*/checkpoints"))  # a sweep's
    if groups:
        saved = groups[-1]
    if saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir()):
        message = f"Interrupted: the state is saved in {saved}. Resume with the same command"
    else:
        message = "Interrupted before the first checkpoint; rerun to start"
    if jax.process_index() == 0:
        print(f"{message}: {_command()}", flush=True)
    sys.exit(130)


def _quiet_closed_loops() -> None:
    """Orbax's tensorstore callbacks print "RuntimeError: Event loop is closed" tracebacks when a
    failed write is cleaned up after its loop; the failure itself is reported as one line."""
    if os.environ.get("JAXNN_TRACEBACK"):
        return

    def closed_loop(value: BaseException | None) -> bool:
        return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"

    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
    sys.excepthook = lambda kind, value, tb: (
        None if closed_loop(value) else excepthook(kind, value, tb)
    )
    sys.unraisablehook = lambda info: None if closed_loop(info.exc_value) else unraisablehook(info)


def _host_devices_per_core() -> None:
    """One XLA host device per usable core (unless ``XLA_FLAGS`` sets a count): a sweep splits
    its members over the devices (``jaxnn.sharding.member_mesh``), so on CPU they run on every
    core. Only the host platform reads the flag; it must be set before JAX starts its backends,
    which importing jaxnn does not do."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = f"--xla_force_host_platform_device_count={cores or 1}"
    os.environ["XLA_FLAGS"] = f"{flags} {count}".strip()


def _sweep_runner(runner: Callable[..., object]) -> Callable[..., object]:
    """``runner``, or a sweep over the ``--sweep.*`` flags (taken out of ``sys.argv``)."""
    from jaxnn import sweep_run

    try:
        spec, rest = sweep_run.parse_sweep_args(sys.argv[1:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if not spec:
        return runner
    if runner is not run:
        print(
            "error: --sweep.*: this experiment runs several configurations itself; sweep an "
            "experiment that makes one run",
            file=sys.stderr,
        )
        raise SystemExit(2)
    sys.argv[1:] = rest
    _host_devices_per_core()

    def sweep(config, workdir, *, stop=None):
        return sweep_run.run_sweep(config, spec, workdir, stop=stop)

    return sweep


def main(
    get_config: Callable[[], ml_collections.ConfigDict],
    default_workdir: str,
    *,
    runner: Callable[..., object] = run,
) -> None:
    """Runs an experiment from the command line: parses flags, then ``runner`` (default
    ``jaxnn.run.run``; any ``(config, workdir, *, stop)`` function, such as a comparison of
    several runs).

    SIGINT and SIGTERM finish the step in flight, save a checkpoint and exit 130 with the
    command that resumes; a bad value or a busy workdir exits 2 with one ``error:`` line; a
    checkpoint that cannot be written (disk full) exits 1 with one ``error:`` line saying which
    checkpoints are intact (``JAXNN_TRACEBACK=1`` re-raises instead).
    """
    from absl import app, flags
    from absl import logging as absl_logging

    if {"-h", "--help", "--helpfull"} & set(sys.argv[1:]):
        print(_help(get_config(), default_workdir))
        sys.exit(0)
    runner = _sweep_runner(runner)
    define_flags(get_config(), default_workdir)

    def _main(argv: list[str]) -> None:
        del argv
        if not flags.FLAGS["verbosity"].present:  # tfds and jax log a lot at INFO
            absl_logging.set_verbosity(absl_logging.WARNING)
        _quiet_closed_loops()
        stop = StopRequest()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: stop.request())
        try:
            _train(runner, stop)
        except KeyboardInterrupt:
            close_progress_bars()  # the message starts on a line of its own
            _interrupted(flags.FLAGS.workdir)
        except _USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except CheckpointError as error:  # a fault while running: disk full, permission lost
            if os.environ.get("JAXNN_TRACEBACK"):
                raise
            print(
                f"error: {error}. Once that is fixed, resume with the same command: "
                f"{_command()} (JAXNN_TRACEBACK=1 shows the traceback)",
                file=sys.stderr,
            )
            sys.exit(1)

    app.run(_main)
