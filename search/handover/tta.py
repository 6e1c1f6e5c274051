"""Test-time augmentation chosen again at export, on the search's validation split.

The search samples only "none" or "flip" (each extra view costs a pass at every evaluation of
every trial); the exported models are few, and one look at the validation split with their
search weights tells which of the views their training allows pays for each. The final
training then trains and exports the architecture with that choice: TTA changes only how the
model predicts, never how it trains, so the choice made on the search's weights carries over.
The test set plays no part.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

import fmnist
from space import ModelSpec, build
from space.network import Views, without_tta
from space.count import VIEWS
from space.spec import tta_choices


class PerView(nn.Module):
    """(views x batch, classes) -> (batch, views, classes): each view's logits, not their mean."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.n, -1, x.shape[-1]).transpose(0, 1)


def validation_accuracy(spec: ModelSpec, weights: dict[str, torch.Tensor], val: fmnist.Split,
                        amp: torch.dtype | None) -> dict[str, float]:
    """Validation accuracy of the trained net under each TTA its training allows (and its own)."""
    choices = sorted(set(tta_choices(spec.train)) | {spec.arch.tta}, key=VIEWS.get)
    model = build(spec.arch)
    model.load_state_dict(weights)
    core = without_tta(model).to(val.images.device)
    most = max(choices, key=VIEWS.get)
    if most == "none":
        return {"none": fmnist.accuracy(fmnist.predict(core, val.images, amp), val.labels)}
    # Views lays the views out so that each TTA's are a prefix of the next's: one pass serves all.
    logits = fmnist.predict(nn.Sequential(Views(most), *core, PerView(VIEWS[most])), val.images, amp, batch_size=500)
    return {tta: fmnist.accuracy(logits[:, :VIEWS[tta]].mean(1), val.labels) for tta in choices}


def choose(accs: dict[str, float]) -> str:
    """The most accurate on validation; on a tie, the one with fewer passes."""
    return max(accs, key=lambda tta: (accs[tta], -VIEWS[tta]))


def with_choice(spec: ModelSpec, tta: str) -> ModelSpec:
    return dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, tta=tta))
