"""The ``torch`` peers: PyTorch, 2 threads (on the GPU when there is one), a plain tensor-indexing
loop; ``torch`` runs eagerly with the default memory format, and two variants add a setting that
PyTorch's performance tuning guide recommends for CPU training:

* ``torch_channels_last``: the CNN's model and inputs in ``torch.channels_last`` (NHWC) memory
  format, which oneDNN's convolutions prefer. Skipped for the MLP: it has no convolution, so the
  format would only restride its 28x28x1 input and the run would be the ``torch`` row.
* ``torch_compile``: the model wrapped in ``torch.compile`` (Inductor, which needs a C++
  compiler), with a fresh Inductor cache so its compilation, which lands in ``compile_s`` and in
  the time to accuracy, is a first run's like jaxnn's. Without a working compiler the record says
  so (``skipped``) instead of holding figures.

Imported by the torch workers only; it must not import jax or jaxnn (its peak RSS is torch's).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import torch._dynamo.exc
import torch._inductor.exc
import torch.nn.functional as F
from torch import nn

from experiments.benchmark.common import BATCH_SIZE, EVAL_BATCH_SIZE, LEARNING_RATE, Peer


def torch_model(workload: str) -> nn.Module:
    """The benchmark's ``"mlp"`` or ``"cnn"`` in torch layers (NCHW inputs)."""
    if workload == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 10),
        )  # fmt: skip
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.4),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )  # fmt: skip


class TorchPeer(Peer):
    """A model, an Adam optimizer and the data on one device; one epoch is a loop over a
    ``torch.randperm`` of the training set. ``channels_last`` and ``compile`` select the
    ``torch_channels_last`` and ``torch_compile`` variants."""

    # torch.compile raises these when Inductor cannot build its kernels here: no C++ compiler
    # (InvalidCxxCompiler, wrapped in an InductorError, a BackendCompilerFailed), a compiler that
    # fails, or any other failure of the backend; the skip reason names the error.
    unavailable_errors = (
        torch._dynamo.exc.BackendCompilerFailed,
        torch._inductor.exc.InvalidCxxCompiler,
        torch._inductor.exc.CppCompileError,
    )

    def __init__(
        self,
        workload: str,
        data: dict[str, np.ndarray],
        *,
        channels_last: bool = False,
        compile: bool = False,
        seed: int = 0,
    ):
        super().__init__(workload, data, seed)
        torch.set_num_threads(2)
        torch.manual_seed(seed)
        self.channels_last, self.compile = channels_last, compile
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if compile:  # read when Inductor first compiles; removed with this object
            self.inductor_cache = tempfile.TemporaryDirectory(prefix="benchmark_inductor_")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = self.inductor_cache.name

    def skip_reason(self) -> str | None:
        if self.channels_last and self.workload == "mlp":
            return (
                "torch_channels_last runs the CNN only: the MLP has no convolution, so the format "
                "would only restride its 28x28x1 input and the run would be the torch row"
            )
        return None

    def build(self) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
        model = torch_model(self.workload).to(device, memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        self.model = torch.compile(model) if self.compile else model
        # NHWC -> NCHW in the peer's memory format once, as part of setup (timed like jaxnn's
        # device placement).
        self.x = self._images(self.data["x_train"])
        self.y = torch.from_numpy(self.data["y_train"]).long().to(device)
        self.x_test = self._images(self.data["x_test"])
        self.y_test = torch.from_numpy(self.data["y_test"]).long().to(device)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _images(self, x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
        return x.to(self.device)

    def train_epoch(self) -> None:
        self.model.train()
        order = torch.randperm(len(self.x), generator=self.generator).to(self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for i in range(0, len(self.x), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            # Indexing keeps the memory format; contiguous() then costs nothing, and says so.
            images = self.x[idx].contiguous(memory_format=self.memory_format)
            labels = self.y[idx]
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            correct += (logits.detach().argmax(1) == labels).sum()
        self.train_correct = int(correct)  # waits for the last step (on a GPU)

    @torch.no_grad()
    def test_accuracy(self) -> float:
        self.model.eval()
        correct = 0
        for i in range(0, len(self.x_test), EVAL_BATCH_SIZE):
            logits = self.model(self.x_test[i : i + EVAL_BATCH_SIZE])
            correct += int((logits.argmax(1) == self.y_test[i : i + EVAL_BATCH_SIZE]).sum())
        return correct / len(self.x_test)
