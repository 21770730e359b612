"""jaxnn: a small, fast, functional deep-learning toolkit on JAX, Flax and Optax.

The pieces stay usable on their own (``models``, ``losses``, ``metrics``, ``optim``, ``step``);
``Trainer`` puts them together Keras-style; ``Sweep`` trains many configurations of one model at
once (``jax.vmap``); ``load(workdir)`` gives a trained run's model back
(``jaxnn.inference``, which also exports it). ``jaxnn.data`` (datasets through tensorflow-datasets,
without TensorFlow) is imported on demand.
"""

from jaxnn import callbacks, inference, losses, metrics, models, optim, state, step
from jaxnn.callbacks import Callback, EarlyStopping, ReduceLROnPlateau
from jaxnn.inference import LoadedModel, load
from jaxnn.loop import TrainLoop
from jaxnn.models import CNN, MLP
from jaxnn.state import TrainState, create_train_state
from jaxnn.sweep import MemberSpec, Sweep
from jaxnn.trainer import Trainer, TrainingDivergedError

__version__ = "0.1.0"

__all__ = [
    "CNN",
    "MLP",
    "Callback",
    "EarlyStopping",
    "LoadedModel",
    "MemberSpec",
    "ReduceLROnPlateau",
    "Sweep",
    "TrainLoop",
    "TrainState",
    "Trainer",
    "TrainingDivergedError",
    "callbacks",
    "create_train_state",
    "inference",
    "load",
    "losses",
    "metrics",
    "models",
    "optim",
    "state",
    "step",
]
