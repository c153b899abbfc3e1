"""Knowledge distillation: the student learns from the labels and from a teacher's logits."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.channels import ChannelConfig


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha: float = 0.7, temperature: float = 4.0, label_smoothing: float = 0.1) -> torch.Tensor:
    """``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)`` (Hinton et al., 2015)."""
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * temperature**2 * soft


def distillation_loss_fn(teacher: nn.Module, alpha: float = 0.7, temperature: float = 4.0,
                         label_smoothing: float = 0.1) -> Callable[..., torch.Tensor]:
    """A ``fit`` loss hook that runs the frozen teacher on the same (augmented) batch."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor,
                config: ChannelConfig) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs, config)
        return distillation_loss(logits, teacher_logits, labels, alpha, temperature, label_smoothing)

    return loss_fn
