"""Classification metrics from logits: confusion matrix, per-class precision and recall."""
from __future__ import annotations

import torch

from .data import CLASSES
from .trainer import accuracy


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """(true class, predicted class) counts."""
    pred = logits.argmax(1).cpu()
    return torch.bincount(labels.cpu() * classes + pred, minlength=classes * classes).view(classes, classes)


def classification_report(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, top-5, per-class precision/recall and the confusion matrix, JSON-ready."""
    cm = confusion_matrix(logits, labels, len(CLASSES)).double()
    tp = cm.diag()
    precision = (tp / cm.sum(0).clamp(min=1)).tolist()
    recall = (tp / cm.sum(1).clamp(min=1)).tolist()
    return {
        "accuracy": accuracy(logits, labels), "top5": accuracy(logits, labels, k=5),
        "per_class": {name: {"precision": p, "recall": r} for name, p, r in zip(CLASSES, precision, recall)},
        "confusion_matrix": cm.long().tolist(),  # rows: true class, columns: predicted
    }
