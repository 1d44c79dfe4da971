"""The tabular network: numeric inputs plus categorical embeddings → MLP → a head per task.

It lives with the model package because loading a package rebuilds it from its config and
loads only tensors into it (no pickled objects).
"""

from __future__ import annotations

import torch
from torch import nn

from mlray.spec import ModelSpec

TASKS = ("binary", "multiclass", "regression")


def embedding_size(cardinality: int, configured: int | None) -> int:
    """fast.ai's rule of thumb, capped: small vocabularies get small embeddings."""
    return configured or max(2, min(16, round(1.6 * cardinality**0.56)))


class TabularNet(nn.Module):
    def __init__(self, numeric: int, cardinalities: list[int], outputs: int, model: ModelSpec):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_size(c, model.embedding_dim)) for c in cardinalities)
        width = numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for hidden in model.hidden:
            layers += [nn.Linear(width, hidden)] + ([nn.BatchNorm1d(hidden)] if model.batch_norm else []) + \
                      [nn.ReLU(), nn.Dropout(model.dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, outputs)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [embed(categorical[:, i]) for i, embed in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1)))


def outputs_for(task: str, classes: int) -> int:
    return classes if task == "multiclass" else 1


def predictions(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Probability of the positive class, class probabilities, or the regression value."""
    if task == "binary":
        return torch.sigmoid(logits.squeeze(1))
    if task == "multiclass":
        return torch.softmax(logits, dim=1)
    return logits.squeeze(1)


