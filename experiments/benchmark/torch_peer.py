"""The ``torch`` peer: PyTorch eager, 2 threads (on the GPU when there is one), a plain
tensor-indexing loop.

Imported by the torch worker only; it must not import jax or jaxnn (its peak RSS is torch's).
"""

from __future__ import annotations

import numpy as np
import torch
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
    ``torch.randperm`` of the training set."""

    def __init__(self, workload: str, data: dict[str, np.ndarray]):
        super().__init__(workload, data)
        torch.set_num_threads(2)
        torch.manual_seed(0)

    def build(self) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
        self.model = torch_model(self.workload).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        # NHWC -> NCHW once, as part of setup (timed like jaxnn's device placement).
        self.x = torch.from_numpy(self.data["x_train"]).permute(0, 3, 1, 2).contiguous().to(device)
        self.y = torch.from_numpy(self.data["y_train"]).long().to(device)
        x_test = torch.from_numpy(self.data["x_test"]).permute(0, 3, 1, 2).contiguous()
        self.x_test = x_test.to(device)
        self.y_test = torch.from_numpy(self.data["y_test"]).long().to(device)
        self.generator = torch.Generator().manual_seed(0)

    def train_epoch(self) -> None:
        self.model.train()
        order = torch.randperm(len(self.x), generator=self.generator).to(self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for i in range(0, len(self.x), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            images, labels = self.x[idx], self.y[idx]
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
