"""What a run leaves behind: the learning curves and the confusion matrix pictures."""

import ml_collections
import numpy as np
import pytest

from jaxnn import report
from jaxnn import run as run_lib


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions would save, kept instead of written."""
    kept = []
    monkeypatch.setattr(report, "_savefig", lambda fig, path: kept.append(fig))
    return kept


def test_learning_curves_tick_whole_epochs(figures, tmp_path):
    history = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85], "accuracy": [0.5, 0.6, 0.7]}
    report.plot_learning_curves(history, tmp_path / "curves.png", "accuracy")
    (fig,) = figures
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_confusion_matrix_has_a_colour_bar_and_names_the_split(figures, tmp_path):
    config = ml_collections.ConfigDict({"name": "mnist_mlp"})
    y_test = np.array([0, 1, 2, 2, 1])
    dataset = run_lib.Dataset(
        x_train=None, y_train=None, x_val=None, y_val=None, x_test=None, y_test=y_test,
        class_names=("a", "b", "c"),
    )  # fmt: skip
    probabilities = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 1]]
    run_lib.plot_confusion(config, tmp_path, dataset, probabilities)
    (fig,) = figures
    heat_map, colour_bar = fig.axes
    assert heat_map.get_title() == "mnist_mlp — test split, 5 examples"
    assert colour_bar.get_ylabel() == "examples"
    matrix = heat_map.images[0].get_array()
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 2, 0], [0, 1, 1]])
