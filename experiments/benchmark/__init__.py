"""Speed benchmark: jaxnn's Trainer against hand-written Flax, PyTorch and Keras 3 (JAX backend).

    python -m experiments.benchmark                       # full: Fashion-MNIST, every framework
    python -m experiments.benchmark --quick --out /tmp/benchmark.json --frameworks jaxnn,flax
    python -m experiments.benchmark --sweep-dispatch --bf16

Two workloads on 28x28x1 inputs, 60,000 training examples, Adam 1e-3, batch 128:

* ``mlp``: Flatten-Dense128-ReLU-Dropout0.2-Dense128-ReLU-Dropout0.2-Dense10;
* ``cnn``: Conv32(3x3 same)-BN-ReLU-MaxPool2-Conv64(3x3 same)-BN-ReLU-MaxPool2-Flatten-Dropout0.4-
  Dense128-ReLU-Dense10.

Frameworks (``--frameworks``; all by default, those needing torch or keras when importable:
``pip install -e '.[bench]'``):

* ``jaxnn``: ``Trainer.fit`` as a user calls it, default settings;
* ``flax``: a Linen + Optax loop in the style of the Flax ``examples/mnist``: TrainState, one
  ``@jax.jit`` step per batch, host-side numpy batching of a per-epoch permutation,
  ``nn.max_pool``;
* ``flax_resident``: the same models and step in the loop a JAX expert writes: the data put on the
  device once, each epoch's permutation passed as an index array, the batch gathered inside the
  jitted step (``x[idx]``), the train state donated;
* ``flax_scan`` (a reference): ``flax_resident`` with a whole epoch in one ``jax.lax.scan``; the
  CNN only where JAX runs on a GPU (on XLA CPU a scan of CNN steps runs several times slower);
* ``torch``: eager, 2 threads, tensor-indexing loop;
* ``torch_channels_last``: ``torch`` with the CNN's model and inputs in ``torch.channels_last``
  memory format (the MLP has no convolution: skipped);
* ``torch_compile``: ``torch`` with the model wrapped in ``torch.compile`` (a fresh Inductor cache;
  skipped, with the reason, where Inductor cannot compile, e.g. without a C++ compiler);
* ``keras``: Keras 3 ``model.fit`` on the JAX backend.

``--seed S`` (default 0) seeds every framework's initialisation, dropout and data order alike: time
to accuracy moves with the seed by whole epochs, so compare it over several (``--seed 1``,
``--seed 2``). ``--repeats N`` measures every framework N times in rounds that alternate their order
(A B C, C B A, ...), so that the machine's drift hits all alike; each record is then the median of
the framework's runs (its ``runs`` list holds them; the target accuracy counts as reached when every
run reached it), and ``ratios_over_rounds[workload]`` gives jaxnn's ratios against each round's
fastest peers, round by round, as median, min, max and values, with the peers named: the figure to
read for a speed target on a noisy shared machine. ``--bf16`` adds ``jaxnn_bf16`` (models with
``dtype=jnp.bfloat16``). A framework that does not apply to a workload or cannot run here has
``{"skipped": reason}`` as its record.

Every (workload, framework) runs in its own subprocess, so its peak RSS is its own, and they run one
after another on the same machine within one invocation: compare the ratios, not the absolute
figures, which move with the load of a shared machine.

What is measured (and how):

* ``train_examples_per_s``: training examples of one epoch / the epoch's synchronised train time,
  the median over the epochs after the first (warm-up) epoch.
* ``compile_s``: first epoch's train time minus the median later epoch's (tracing, compilation and
  first-touch costs; about 0 for eager PyTorch, where it is clipped at 0). jaxnn's ``fit``
  compiles partly before its first epoch starts (beside the initialisation), so its figure is the
  compilation it still waits for; ``time_to_accuracy_s`` counts all of it.
* ``eval_examples_per_s``: test examples / time of one pass over the test set with batch 1024 (each
  framework's own evaluate), median of 3 passes after a warm-up pass.
* ``peak_rss_mb``: ``ru_maxrss`` of the subprocess (data, framework, compiled code, everything).
* ``time_to_accuracy_s`` (Fashion-MNIST, not ``--quick``): wall time from the start of training
  setup (model construction, initialisation, data placement and compilation included) to the end of
  the first epoch after which test accuracy is >= 0.88 (MLP) / 0.91 (CNN), with the time spent
  evaluating the test set after each epoch excluded, for every framework alike. At most 15 (MLP) /
  10 (CNN) epochs; null when the target is not reached. ``epochs_to_accuracy`` counts the epochs.

``ratios[workload][peer]``: ``train_speedup`` = jaxnn train ex/s / peer train ex/s and
``time_to_accuracy_speedup`` = peer time / jaxnn time; above 1 means jaxnn is faster. Peers are
every framework but jaxnn and its variants; jaxnn's variants (``jaxnn_bf16``, ``jaxnn_warm_cache``)
get the same two ratios against every peer in ``variant_ratios[workload][variant][peer]``.
``fastest_peer[workload]`` names the peer with the most ``train_examples_per_s`` and the one with
the least ``time_to_accuracy_s`` (null when none reached the target), leaving out the reference
``flax_scan``; ``ratios_vs_fastest[workload]`` holds jaxnn's ``train_speedup`` against the first
and ``time_to_accuracy_speedup`` against the second, with their names (``train_peer``,
``time_to_accuracy_peer``). The printed table's ratio columns are jaxnn against the row's
framework; the lines under it give the ratios against the fastest peers and name them.
``--warm-cache`` adds ``jaxnn_warm_cache``: jaxnn with JAX's persistent compilation cache on, as
every ``python -m experiments.<name>`` run has it (``jaxnn.cli.enable_compilation_cache``), in a
cache that a 2-epoch run of the same workload filled first, so its start-up is a re-run's. The
``jaxnn`` row is a first run (no cache), as ``Trainer.fit`` in a user's own script gives.
``--sweep-dispatch`` trains jaxnn with ``steps_per_dispatch`` 1, 8 and 32 in one process, epochs
interleaved round-robin so that load drift hits all three alike (CNN epochs on 4,096 examples).

Layout: ``common`` (settings, the epoch loop and its clock, the result record: written once),
``data`` (loaded in the parent, handed to workers as .npy files), one module per framework
(``jaxnn_peer``, ``flax_peer``, ``flax_resident_peer`` for ``flax_resident`` and ``flax_scan``,
``torch_peer`` for the three torch peers, ``keras_peer``: build, train an epoch, evaluate),
``worker`` (one measurement in a subprocess), ``tables`` (ratios, printed tables), ``repeats``
(``--repeats``: round order, median records, paired ratios) and ``cli`` (the parent process). This
package imports only the standard library and numpy; a worker imports just the framework it
measures, so its peak RSS is that framework's.
"""

from experiments.benchmark.cli import main, parse_args
from experiments.benchmark.common import (
    BATCH_SIZE,
    EVAL_BATCH_SIZE,
    FRAMEWORKS,
    LEARNING_RATE,
    MAX_EPOCHS,
    REFERENCE_FRAMEWORKS,
    TARGET_ACCURACY,
    WORKLOADS,
    EpochLog,
    Peer,
    measure,
    run_epochs,
)
from experiments.benchmark.data import load_data
from experiments.benchmark.tables import (
    compute_ratios,
    compute_variant_ratios,
    fastest_peers,
    format_against_fastest,
    format_sweep,
    format_table,
    format_variant_ratios,
    ratios_against_fastest,
)

__all__ = [
    "BATCH_SIZE",
    "EVAL_BATCH_SIZE",
    "FRAMEWORKS",
    "LEARNING_RATE",
    "MAX_EPOCHS",
    "REFERENCE_FRAMEWORKS",
    "TARGET_ACCURACY",
    "WORKLOADS",
    "EpochLog",
    "Peer",
    "compute_ratios",
    "compute_variant_ratios",
    "fastest_peers",
    "format_against_fastest",
    "format_sweep",
    "format_table",
    "format_variant_ratios",
    "load_data",
    "main",
    "measure",
    "parse_args",
    "ratios_against_fastest",
    "run_epochs",
]
