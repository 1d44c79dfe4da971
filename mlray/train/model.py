"""Training the tabular network (`mlray.registry.network`) with Lightning: loss, optimiser, logged losses."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from mlray.registry.network import TASKS, TabularNet, outputs_for
from mlray.spec import ModelSpec, TrainSpec


def loss_for(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task == "binary":
        return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), target.float())
    if task == "multiclass":
        return nn.functional.cross_entropy(logits, target.long())
    return nn.functional.mse_loss(logits.squeeze(1), target.float())


class TabularModule(pl.LightningModule):
    """Lightning wrapper: the loss and optimiser as the spec says; logs train_loss and val_loss."""

    def __init__(self, numeric: int, cardinalities: list[int], task: str, classes: int, model: ModelSpec,
                 train: TrainSpec):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        self.task, self.train_spec = task, train
        self.net = TabularNet(numeric, cardinalities, outputs_for(task, classes), model)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.net(numeric, categorical)

    def _step(self, batch: dict, name: str) -> torch.Tensor:
        loss = loss_for(self.task, self(batch["numeric"], batch["categorical"]), batch["label"])
        self.log(name, loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(batch["label"]))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train_loss")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val_loss")

    def configure_optimizers(self):
        spec = self.train_spec
        if spec.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=spec.learning_rate, momentum=0.9,
                                   weight_decay=spec.weight_decay)
        optimizer = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
        return optimizer(self.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

