"""Batch mixing, a recipe option for every model of a run: MixUp or CutMix from torchvision's transforms.v2.

Each configuration group of a step is mixed within itself (a group holds one configuration's
planes, so a mixed image never combines two channel layouts), and gets soft ``targets`` for
the loss; its ``labels`` stay the unmixed ones, for train accuracy. The transforms draw from
torch's global generator, which ``fit`` seeds per epoch and rank, so a resumed run mixes as an
uninterrupted one does.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..strategies import ConfigGroup


#: ``--mix`` name -> the torchvision ``transforms.v2`` class that mixes (also its name in reports).
MIX_TRANSFORMS: dict[str, str] = {"mixup": "MixUp", "cutmix": "CutMix"}

#: ``--mix`` choices; ``none`` trains on the groups as drawn.
MIX_CHOICES: tuple[str, ...] = ("none", *MIX_TRANSFORMS)


def check_mix(kind: str, alpha: float, distill: bool = False) -> None:
    """``ValueError`` naming the problem unless ``kind`` is a :data:`MIX_CHOICES` name, ``alpha`` is
    positive, and no in-place distillation (``distill``) needs the groups to show the same pixels."""
    if kind not in MIX_CHOICES:
        raise ValueError(f"unknown --mix {kind!r}; choose from {', '.join(MIX_CHOICES)}")
    if not alpha > 0:
        raise ValueError(f"--mix-alpha must be positive (the Beta distribution's parameter), got {alpha}")
    if kind == "none" and alpha != 1.0:  # else a run without mixing would differ from the default by a number
        raise ValueError(f"--mix-alpha {alpha:g} needs --mix mixup or cutmix")
    if kind != "none" and distill:
        raise ValueError(f"--mix {kind} with --distill: each group is mixed on its own, so the RGB logits "
                         "would describe other pixels than the subsets see")


class BatchMix:
    """Mixes each group of a step with ``kind`` (MixUp or CutMix, Beta(``alpha``, ``alpha``) ratios).

    ``distill``: whether the run's strategy distils in place, which mixing cannot serve (see :func:`check_mix`).
    """

    def __init__(self, kind: str, alpha: float, num_classes: int, distill: bool = False) -> None:
        check_mix(kind, alpha, distill)
        self.transform: Callable | None = None
        if kind != "none":
            from torchvision.transforms import v2

            self.transform = getattr(v2, MIX_TRANSFORMS[kind])(alpha=alpha, num_classes=num_classes)

    def __call__(self, groups: list["ConfigGroup"]) -> list["ConfigGroup"]:
        if self.transform is None:
            return groups
        mixed = []
        for g in groups:
            if len(g.labels) < 2:  # nothing to mix with; a rank's share can be this small
                mixed.append(g)
                continue
            inputs, targets = self.transform(g.inputs, g.labels)
            mixed.append(replace(g, inputs=inputs, targets=targets))
        return mixed
