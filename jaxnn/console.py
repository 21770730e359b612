"""The ``jaxnn`` command: find experiments, run them, compare runs, use a trained model.

jaxnn list                              the experiments and the data each needs
jaxnn run NAME [--workdir=...] [--config.<key>=<value> ...]   same as python -m experiments.NAME
jaxnn sweep NAME --sweep.<key>="(v1,v2,...)" [...]  every combination, trained at once where
                                        it can (python -m experiments.NAME --sweep... too)
jaxnn compare WORKDIR... [--out=comparison.png]   settings that differ, results, curves (a
                                        sweep's workdir: its members)
jaxnn predict WORKDIR FILE...           classes and probabilities (images, .npy or .csv)
jaxnn export WORKDIR OUT                the predict function as StableHLO (jax.export)
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import runpy
import sys
from pathlib import Path

import numpy as np

__all__ = ["experiments", "main"]

_USAGE = __doc__.split("\n\n", 1)[1]


def experiments() -> list[tuple[str, str, str]]:
    """``(name, first docstring line, data)`` for each module of the ``experiments`` package;
    data is ``"-"`` for tools (modules without ``get_config``)."""
    import experiments as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"experiments.{info.name}")
        line = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ").split(". ")[0]
        line = line if len(line) <= 90 else line[:87].rstrip() + "..."
        data = module.get_config().dataset.name if hasattr(module, "get_config") else "-"
        found.append((info.name, line, data))
    return found


def _list(_: argparse.Namespace) -> None:
    rows = experiments()
    width = max(len(name) for name, _, _ in rows)
    print(
        "Experiments (jaxnn run NAME, or python -m experiments.NAME; NAME --help lists its config):"
    )
    for name, line, data in rows:
        if data != "-":
            print(f"  {name:<{width}}  [{data}] {line}")
    print("Tools:")
    for name, line, data in rows:
        if data == "-":
            print(f"  {name:<{width}}  {line}")


def _run(args: argparse.Namespace) -> None:
    names = [name for name, _, _ in experiments()]
    if args.name not in names:
        raise SystemExit(f"error: NAME: unknown experiment {args.name!r}; expected one of {names}")
    sys.argv = [f"jaxnn {args.command} {args.name}", *args.rest]
    # Listing imported the module; run it afresh as __main__, as python -m does.
    sys.modules.pop(f"experiments.{args.name}", None)
    runpy.run_module(f"experiments.{args.name}", run_name="__main__", alter_sys=True)


def _sweep(args: argparse.Namespace) -> None:
    if not any(arg.startswith("--sweep.") for arg in args.rest):
        raise SystemExit(
            f'error: jaxnn sweep {args.name}: expected at least one --sweep.<key>="(v1,v2,...)"'
        )
    _run(args)


def _compare(args: argparse.Namespace) -> None:
    from jaxnn.compare import compare

    table, png = compare(args.workdirs, args.out)
    print(table)
    if png is not None:
        print(f"learning curves: {png}")


def _raw_inputs(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """A file's examples as float32 in the dataset's raw units: an image (resized to ``shape``),
    or the rows of a ``.npy`` / ``.csv`` file (one example, or a batch of them)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("L" if shape[-1] == 1 else "RGB").resize((shape[1], shape[0]))
            return np.asarray(image, np.float32).reshape((1, *shape))
    if suffix == ".npy":
        array = np.load(path).astype(np.float32)
    elif suffix == ".csv":
        array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32)
    else:
        raise ValueError(f"FILE: expected an image (.png, .jpg), .npy or .csv; got {path!r}")
    if array.size % int(np.prod(shape)):
        raise ValueError(f"FILE: expected examples of shape {shape}; got {array.shape} in {path}")
    return array.reshape((-1, *shape))


def _prepared(raw: np.ndarray, steps: dict) -> np.ndarray:
    """What the run's model saw: ``jaxnn.inference.preprocessing``'s steps applied."""
    x = raw / np.float32(255) if "scale" in steps else raw
    if "mean" in steps:
        x = (x - np.asarray(steps["mean"], np.float32)) / np.asarray(steps["std"], np.float32)
    return x.astype(np.float32)


def _describe(row: np.ndarray, loaded) -> str:
    if loaded.loss.task == "regression":
        return "value " + ", ".join(f"{v:.4g}" for v in row)
    if row.shape[0] == 1:  # binary: the probability of class 1
        names = loaded.class_names or ("0", "1")
        return f"{names[int(row[0] > 0.5)]} (p={row[0]:.4f} for {names[1]})"
    names = loaded.class_names or tuple(str(i) for i in range(row.shape[0]))
    top = np.argsort(row)[::-1][:3]
    return ", ".join(f"{names[i]} {row[i]:.4f}" for i in top)


def _predict(args: argparse.Namespace) -> None:
    from jaxnn.inference import load, preprocessing

    loaded = load(args.workdir, which=args.which)
    steps = preprocessing(loaded.config)
    for path in args.files:
        probabilities = loaded.predict(_prepared(_raw_inputs(path, loaded.input_shape), steps))
        for i, row in enumerate(probabilities):
            print(f"{path}[{i}]: {_describe(row, loaded)}")


def _export(args: argparse.Namespace) -> None:
    from jaxnn.inference import export

    written = export(args.workdir, args.out, which=args.which)
    print(f"exported to {written}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxnn", description=_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the experiments").set_defaults(handler=_list)
    run = commands.add_parser("run", help="run an experiment", add_help=False)
    run.add_argument("name")
    run.add_argument("rest", nargs=argparse.REMAINDER)
    run.set_defaults(handler=_run)
    sweep = commands.add_parser(
        "sweep", help="train every combination of --sweep.<key>=(values)", add_help=False
    )
    sweep.add_argument("name")
    sweep.add_argument("rest", nargs=argparse.REMAINDER)
    sweep.set_defaults(handler=_sweep)
    compare = commands.add_parser("compare", help="compare runs (or a sweep's members)")
    compare.add_argument("workdirs", nargs="+")
    compare.add_argument("--out", default="comparison.png", help="the overlay plot")
    compare.set_defaults(handler=_compare)
    predict = commands.add_parser("predict", help="predict with a trained run")
    predict.add_argument("workdir")
    predict.add_argument("files", nargs="+")
    predict.add_argument("--which", default="best", help="best | latest | a step")
    predict.set_defaults(handler=_predict)
    export = commands.add_parser("export", help="export a trained run with jax.export")
    export.add_argument("workdir")
    export.add_argument("out")
    export.add_argument("--which", default="best", help="best | latest | a step")
    export.set_defaults(handler=_export)
    return parser


def main(argv: list[str] | None = None) -> None:
    """The ``jaxnn`` console command (``[project.scripts]``)."""
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
