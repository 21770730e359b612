"""A trained run in one line: ``load(workdir)`` rebuilds its model with its best weights, and
``export`` writes its predict function as serialised StableHLO that needs no jaxnn to run.

``load`` reads the workdir that ``jaxnn.run.run`` wrote: ``config.json`` (the model block, the
loss, the metrics, the dataset block) and ``checkpoints/`` (``jaxnn.checkpoint.restore``). The
predictions are those of the run's own ``Trainer.predict``, bit for bit: the ``LoadedModel``
predicts through a ``Trainer`` built for the same model and loss, holding the checkpoint's
variables.

Example::

    model = jaxnn.load("checkpoints/fashion_mnist_cnn")          # the best checkpoint
    probabilities = model.predict(x_test)                       # (N, 10), as Trainer.predict
    labels = model.classes(x_test)                              # argmax (0.5 for binary)
    jaxnn.inference.export(model, "exported/fashion_mnist_cnn")  # model.stablehlo, model.json
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxnn import losses as losses_lib
from jaxnn.step import make_steps
from jaxnn.trainer import Trainer

__all__ = ["LoadedModel", "export", "load", "preprocessing"]

_EVAL_BATCH = 1024  # Trainer.predict's and Trainer.evaluate's default
_RUN_IT = "python -m experiments.<name> --workdir={path}, or jaxnn.run.run(config, {path!r})"


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """A trained model ready to use: the Linen module, its variables and what the run knew.

    Built by ``load``; it predicts and evaluates through a ``Trainer`` made for ``model`` and
    ``loss`` that holds ``variables``, so its outputs are the run's ``Trainer.predict``'s.

    Attributes:
      model: the ``jaxnn.MLP`` or ``jaxnn.CNN`` the config describes.
      variables: ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` when it has any).
      loss: the run's ``jaxnn.losses.Loss`` (its task decides what ``predict`` returns).
      class_names: label names (the dataset's; ``("0", "1")`` for ``binary``; empty otherwise).
      input_shape: one example's shape, as ``predict`` takes it (already preprocessed).
      config: the run's whole config, as ``config.json`` holds it.

    Example::

        loaded = jaxnn.load(workdir)
        print(loaded.evaluate(x_test, y_test))  # {'loss': ..., 'accuracy': ...}
    """

    model: nn.Module
    variables: dict[str, Any]
    loss: losses_lib.Loss
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    config: dict[str, Any]
    _trainer: Trainer = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Its optimizer is never stepped: it only makes the state the variables are checked
        # against (structure, shapes, dtypes: a config that does not fit the checkpoint fails
        # here, naming the first variable that differs).
        trainer = Trainer(
            self.model,
            loss=self.loss,
            metrics=tuple(self.config.get("metrics") or ()) or None,
            seed=int(self.config.get("seed", 0)),
        )
        trainer.initialize(np.zeros((1, *self.input_shape), np.float32), steps_per_epoch=1)
        trainer.variables = self.variables
        object.__setattr__(self, "_trainer", trainer)

    def predict(self, x: Any, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """The model's outputs for ``x`` (preprocessed as the run's data was: see
        ``jaxnn.data.load_splits``), exactly as ``Trainer.predict`` gives them: probabilities
        for classifiers (softmax, or sigmoid for binary), values for regression.

        Example::

            probabilities = jaxnn.load(workdir).predict(splits.x_test)
        """
        return self._trainer.predict(x, batch_size=batch_size)

    def evaluate(self, x: Any, y: Any, batch_size: int = _EVAL_BATCH) -> dict[str, float]:
        """The mean loss and the run's metrics over ``(x, y)``, as ``Trainer.evaluate``.

        Example::

            jaxnn.load(workdir).evaluate(splits.x_test, splits.y_test)  # {'loss':, 'accuracy':}
        """
        return self._trainer.evaluate(x, y, batch_size=batch_size)

    def classes(self, x: Any, batch_size: int = _EVAL_BATCH) -> np.ndarray:
        """Predicted labels (int64): the argmax of the probabilities, or ``p > 0.5`` for a
        binary classifier; index ``class_names`` with them for names.

        Raises:
          ValueError: for a regression model (no classes).

        Example::

            names = [loaded.class_names[i] for i in loaded.classes(x)]
        """
        if self.loss.task == "regression":
            raise ValueError(
                f"classes: expected a classifier; got a regression model (loss {self.loss.name!r})"
                "; use predict() for its values"
            )
        probabilities = self.predict(x, batch_size)
        if self.loss.task == "binary":
            return (probabilities[:, 0] > 0.5).astype(np.int64)
        return probabilities.argmax(axis=1).astype(np.int64)


def load(workdir: str | Path, which: int | str = "best") -> LoadedModel:
    """Rebuilds a run's model from its ``config.json`` with the variables of one checkpoint.

    ``num_outputs`` (which the config does not hold: it is the dataset's number of classes, or
    the targets' width) is read from the checkpoint: the width of the last ``Dense`` layer (the
    output layer of both ``jaxnn.MLP`` and ``jaxnn.CNN``). The example shape is the image
    dataset's ``(H, W, C)``, or for tabular data ``(features,)`` from the first ``Dense`` kernel.

    Args:
      workdir: the run's folder (what ``jaxnn.run.run`` / ``python -m experiments.<name>`` wrote).
      which: ``"best"`` (by the run's monitored metric), ``"latest"`` or a step number.

    Returns:
      A ``LoadedModel``.

    Raises:
      FileNotFoundError: no such workdir, no ``config.json`` in it, or no such checkpoint.
      ValueError: a checkpoint that does not fit the model the config describes.

    Example::

        loaded = jaxnn.load("checkpoints/binary")
        print(loaded.classes(x[:5]), loaded.class_names)
    """
    from jaxnn import checkpoint  # orbax: imported on first use, so `import jaxnn` stays light
    from jaxnn.config import build_loss, build_model

    path = Path(workdir)
    config = _read_config(path)
    try:
        variables = checkpoint.restore(path, which)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}. A run saves checkpoints as it trains (checkpoint.enabled=True): train or "
            f"resume it with {_RUN_IT.format(path=str(path))}"
        ) from None
    loss = build_loss(config)  # evaluate reports the loss the run trained (its smoothing)
    model_config = ml_collections.ConfigDict(config["model"])
    model = build_model(model_config, _num_outputs(variables["params"]))
    input_shape, class_names = _dataset_info(config["dataset"], variables["params"])
    return LoadedModel(
        model=model,
        variables=variables,
        loss=loss,
        class_names=class_names,
        input_shape=input_shape,
        config=config,
    )


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(
            f"workdir: expected a run's folder; got {str(path)!r}, which does not exist. Train "
            f"one with {_RUN_IT.format(path=str(path))}"
        )
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"workdir: expected {str(config_path)!r} (written when a run starts); got a folder "
            f"without it. Train the run with {_RUN_IT.format(path=str(path))}"
        )
    return json.loads(config_path.read_text())


def _dense_layers(params: dict[str, Any]) -> list[str]:
    """The ``Dense_<i>`` layers of ``params`` in the order Flax numbered them."""
    names = [name for name in params if name.startswith("Dense_")]
    return sorted(names, key=lambda name: int(name.removeprefix("Dense_")))


def _num_outputs(params: dict[str, Any]) -> int:
    dense = _dense_layers(params)
    if not dense:
        raise ValueError(
            f"checkpoint: expected a Dense output layer ('Dense_<i>' in params); got {list(params)}"
        )
    return int(params[dense[-1]]["kernel"].shape[-1])


def _dataset_info(dataset: dict[str, Any], params: dict[str, Any]) -> tuple[tuple, tuple]:
    """``(example shape, class names)`` of the run's dataset."""
    # jaxnn.data.sources owns the image datasets' shapes and names (builders.class_names reads
    # them there), and importing it does not import tensorflow_datasets.
    from jaxnn.data.sources import DATASETS

    name = dataset["name"]
    if name in DATASETS:
        return tuple(DATASETS[name].shape), tuple(DATASETS[name].class_names)
    if name == "image_folder":  # the folder's cached decoding says both
        from jaxnn.data.folders import read_image_folder

        size = dataset.get("image_size")
        images, _, names = read_image_folder(
            dataset["path"],
            image_size=tuple(size) if size else None,
            grayscale=dataset.get("grayscale"),
            cache_dir=dataset.get("cache_dir") or None,
        )
        return tuple(images.shape[1:]), tuple(names)
    features = (int(params[_dense_layers(params)[0]]["kernel"].shape[0]),)
    return features, ("0", "1") if name == "binary" else ()


def export(
    source: str | Path | LoadedModel,
    out_dir: str | Path,
    *,
    which: int | str = "best",
    platforms: Sequence[str] = ("cpu", "cuda"),
) -> Path:
    """Writes the model's predict function (``LoadedModel.predict``'s outputs) as serialised
    StableHLO (``jax.export``) that any JAX can run without jaxnn, and what it expects.

    The function takes a float32 batch ``(batch, *input_shape)`` ALREADY PREPROCESSED as the run's
    data was (``model.json``'s ``preprocessing`` says how from raw data) and returns float32
    probabilities (values for regression) ``(batch, num_outputs)``. The batch size is symbolic:
    any batch runs. The variables are baked in as constants: the file is the whole model, and
    the caller passes nothing but the input.

    Files in ``out_dir``: ``model.stablehlo`` (``jax.export.Exported.serialize()``) and
    ``model.json`` (input shape and dtype, output, class names, preprocessing, platforms).

    Args:
      source: a run's workdir (loaded with ``load(source, which)``) or a ``LoadedModel``.
      out_dir: the folder to write (made when missing; the two files are replaced).
      which: the checkpoint, when ``source`` is a workdir.
      platforms: what the serialised function may run on (``jax.export`` lowers for each).

    Returns:
      ``out_dir`` as a Path.

    Example::

        jaxnn.inference.export("checkpoints/mnist_cnn", "exported/mnist_cnn")
        # elsewhere, with jax alone:
        exported = jax.export.deserialize(bytearray(open("exported/mnist_cnn/model.stablehlo",
                                                         "rb").read()))
        probabilities = exported.call(x.astype(np.float32))
    """
    loaded = source if isinstance(source, LoadedModel) else load(source, which)
    out_dir = Path(out_dir)
    # The step module owns "predict = the loss's output activation of apply"; no optimizer runs.
    predict_fn = make_steps(loaded.model, loaded.loss, optax.identity()).predict
    variables = jax.tree.map(jnp.asarray, loaded.variables)

    def predict(x: jax.Array) -> jax.Array:
        return predict_fn(variables, x)

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *loaded.input_shape), jnp.float32)
    exported = jax.export.export(jax.jit(predict), platforms=tuple(platforms))(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.stablehlo").write_bytes(exported.serialize())
    (out_dir / "model.json").write_text(json.dumps(_description(loaded, exported), indent=2))
    return out_dir


def _description(loaded: LoadedModel, exported: jax.export.Exported) -> dict[str, Any]:
    """``model.json``: what the serialised function takes and returns, and how to prepare data."""
    output = exported.out_avals[0]
    return {
        "format": "jax.export serialized Exported (StableHLO); load with jax.export.deserialize",
        "file": "model.stablehlo",
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "platforms": list(exported.platforms),
        "name": loaded.config.get("name"),
        "input": {
            "shape": [None, *loaded.input_shape],
            "dtype": "float32",
            "preprocessed": True,
        },
        "output": {
            "shape": [None, int(output.shape[1])],
            "dtype": np.dtype(output.dtype).name,
            "kind": "values" if loaded.loss.task == "regression" else "probabilities",
            "task": loaded.loss.task,
        },
        "class_names": list(loaded.class_names),
        "preprocessing": preprocessing(loaded.config),
    }


def preprocessing(config: dict[str, Any]) -> dict[str, Any]:
    """How a run turned raw data into the float32 its model saw (``jaxnn.data.load_splits``):
    images ``x / 255`` (uint8 to [0, 1]), then with ``normalization="standardize"`` per-channel
    ``(x - mean) / std``; tabular features ``(x - mean) / std`` per feature. ``mean``/``std``
    are the training split's, recomputed here from the run's dataset block and seed (so the
    run's data must be at hand when they are needed).

    Example::

        preprocessing(loaded.config)  # {'scale': 0.00392..., 'formula': 'x = float32(raw) / 255'}
    """
    from jaxnn.data.sources import DATASETS
    from jaxnn.data.splits import load_splits

    dataset = config["dataset"]
    steps: dict[str, Any] = {"normalization": dataset.get("normalization", "scale")}
    image = dataset["name"] in DATASETS or dataset["name"] == "image_folder"
    if image:
        # to_float divides: x * scale can differ from x / 255 in the last bit.
        steps.update(scale=1 / 255, formula="x = float32(raw uint8 image) / 255")
        if steps["normalization"] != "standardize":
            return steps
    splits = load_splits(ml_collections.ConfigDict(dataset), int(config.get("seed", 0)))
    if splits.mean is None:
        steps["formula"] = "x = float32(raw features)"
        return steps
    steps["mean"] = np.asarray(splits.mean, np.float32).tolist()
    steps["std"] = np.asarray(splits.std, np.float32).tolist()
    if image:
        steps["formula"] = "x = (float32(raw) / 255 - mean) / std, per channel (last axis)"
    else:
        steps["normalization"] = "standardize"
        steps["formula"] = "x = (float32(raw features) - mean) / std, per feature"
    return steps
