"""Training strategies: which channel configurations each step trains, on which images, with which loss.

``engine.fit`` runs the plain loop (optimizer, schedule, checkpoints); a strategy decides
what one step is. Strategies are looked up by name, so a new method is a new class here,
not a branch in ``fit``.

- ``fixed``: one configuration for every batch (the naive and task-2 models).
- ``sampled``: one configuration per batch, drawn by ChannelViT's hierarchical rule (a
  channel count uniformly, then a subset of that size). Every image is seen once per
  epoch; R, G and B each get a ninth of the batches.
- ``joint`` (our default for the any-channel model): every step trains several
  configurations, each on its own group of images, gradients summed into one update. With
  all seven per step, an epoch shows every image once *to every configuration*: exactly the
  (image, configuration) pairs the seven per-configuration models see, so the compute
  matches theirs, but one shared network takes all the updates. Options give the
  slimmable-network variants: the groups share their images (``share_images``), and the
  subsets also learn from the RGB logits of those images (``distill``, in-place
  distillation, Yu & Huang 2019), or fewer configurations per step chosen by the
  sandwich rule, or a step's views split unevenly between configurations (``allocation``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.channels import ALL_CONFIGS, ChannelConfig, configs_with

from .data.loader import SplitTensors, apply_augment, augment_params, normalize, select_channels
from .distributed import Shard
from .distill import distillation_loss

#: Passed to a strategy's loss: ``(logits, labels, inputs, config) -> loss`` replaces cross-entropy.
#: ``labels`` are class indices, or soft targets (``N x classes``) when the recipe mixes images.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, ChannelConfig], torch.Tensor]


@dataclass
class ConfigGroup:
    """Part of a step: normalised ``inputs`` seen through ``config``, their ``labels``.

    Under data parallelism the group is this rank's share; ``weight`` scales its mean loss
    so that the average over ranks is the mean over the whole group (see ``Shard.weight``).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    config: ChannelConfig
    weight: float = 1.0
    #: Soft targets (``N x classes``) when the recipe mixes images (``--mix``); ``labels`` stay the unmixed ones.
    targets: torch.Tensor | None = None
    #: Images in the whole group, over all ranks (``None``: this share is the whole group).
    global_count: int | None = None

    @property
    def global_views(self) -> int:
        return len(self.labels) if self.global_count is None else self.global_count

    @property
    def loss_targets(self) -> torch.Tensor:
        """What the loss compares the logits with: the mixed targets, else the labels."""
        return self.labels if self.targets is None else self.targets


@dataclass
class StepResult:
    """What the loop needs from one step: the loss to minimise, and logits for train accuracy."""

    loss: torch.Tensor
    groups: list[ConfigGroup]
    logits: list[torch.Tensor]

    @property
    def views(self) -> int:
        return sum(len(g.labels) for g in self.groups)


class TrainingStrategy(Protocol):
    """What ``engine.fit`` calls; see the module docstring for the built-in ones."""

    name: str
    #: Whether fit recomputes each configuration's batch-norm statistics after each epoch (precise BN).
    precise_bn: bool

    def steps(self, split: SplitTensors, batch_size: int, generator: torch.Generator, shard: Shard = Shard()
              ) -> Iterator[list[ConfigGroup]]:
        """One epoch: each item is one optimizer step's groups, augmented and normalised.

        Every rank draws the whole epoch from the same generator (order, configurations,
        augmentation) and keeps its ``shard`` of each group: the same configurations on all
        ranks at each global step, and the global batch of one process.
        """

    def steps_per_epoch(self, images: int, batch_size: int) -> int:
        """How many items :meth:`steps` yields for ``images`` training images."""

    def group_sizes(self, batch_size: int) -> list[int]:
        """The images in each group of a step; ``ValueError`` when one would hold fewer than 2."""

    def loss(self, model: nn.Module, groups: list[ConfigGroup], label_smoothing: float,
             loss_fn: LossFn | None = None) -> StepResult:
        """Forward every group and return the step's loss: the mean over groups, each weighted by ``weight``."""

    def describe(self) -> dict[str, Any]:
        """The options, for checkpoints and reports."""


def sample_config(generator: torch.Generator) -> ChannelConfig:
    """Hierarchical channel sampling (ChannelViT): a channel count uniformly, then a set of that size."""
    count = int(torch.randint(1, 4, (1,), generator=generator))
    options = configs_with(count)
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _pick(options: list[ChannelConfig], generator: torch.Generator) -> ChannelConfig:
    return options.pop(int(torch.randint(len(options), (1,), generator=generator)))


def sandwich_configs(count: int, generator: torch.Generator,
                     configs: tuple[ChannelConfig, ...] = ALL_CONFIGS) -> list[ChannelConfig]:
    """The sandwich rule: the widest (RGB), a narrowest (one channel) and ``count - 2`` others at random."""
    if count >= len(configs):
        return list(configs)
    widest = configs[0]
    narrow = [c for c in configs if c.num_channels == min(x.num_channels for x in configs)]
    chosen = [widest]
    if count >= 2:
        chosen.append(_pick(narrow, generator))
    rest = [c for c in configs if c not in chosen]
    while len(chosen) < count:
        chosen.append(_pick(rest, generator))
    return sorted(chosen, key=lambda c: c.index)


#: How a joint step's views are split between its configurations (``--allocation``): a weight per
#: configuration, normalised over the step.
ALLOCATIONS: dict[str, Callable[[ChannelConfig], float]] = {
    "uniform": lambda config: 1.0,
    # Fewer channels, more views: trades RGB accuracy for one-channel accuracy (BENCHMARKS.md).
    "inverse-channels": lambda config: 1.0 / config.num_channels,
    # Half way, on a log scale, between the two above.
    "inverse-sqrt-channels": lambda config: config.num_channels ** -0.5,
}


def allocate(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, rounded by largest remainder (the parts sum to ``total``).

    Equal remainders go to the earlier parts: at some batch sizes configurations of equal weight
    differ by one view (126 and 252 views split evenly: RGB 9, 13 per pair, 26 per plane).
    """
    exact = [total * w / sum(weights) for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: parts[i] - exact[i])
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _check_group_sizes(sizes: list[int], batch_size: int, configs: int) -> list[int]:
    """``sizes`` (images per group of a step), unless one is under the 2 batch norm needs."""
    if min(sizes) < 2:
        which = "each" if len(set(sizes)) == 1 else "some"
        raise ValueError(f"batch size {batch_size} leaves fewer than 2 images for {which} of "
                         f"{configs} configurations (batch norm needs 2)")
    return sizes


class _ImageStream:
    """Endless passes over ``n`` images, each pass a new permutation drawn from ``generator``."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator
        self.order, self.position = torch.randperm(n, generator=generator), 0

    def take(self, count: int) -> torch.Tensor:
        parts = []
        while count:
            if self.position == self.n:
                self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
            part = self.order[self.position : self.position + count]
            self.position += len(part)
            count -= len(part)
            parts.append(part)
        return torch.cat(parts)


def _cross_entropy(label_smoothing: float) -> LossFn:
    return lambda logits, y, x, c: F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def _augmented(split: SplitTensors, idx: torch.Tensor, generator: torch.Generator, shard: Shard,
               channels: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of ``idx``, cropped and flipped with parameters drawn for all of ``idx``."""
    offsets, flips = augment_params(len(idx), split.image_size, generator)
    own = shard.take(idx)
    planes = split.take(own)
    if channels is not None:
        planes = select_channels(planes, channels)
    return apply_augment(planes, shard.take(offsets), shard.take(flips)), own


def _group(split: SplitTensors, idx: torch.Tensor, config: ChannelConfig, generator: torch.Generator,
           shard: Shard = Shard(), shared: tuple[torch.Tensor, torch.Tensor] | None = None) -> ConfigGroup:
    """``idx``'s images through ``config``; ``shared`` (augmented RGB planes of this rank's share
    of ``idx``, and that share) makes groups share crops."""
    if shared is None:
        planes, own = _augmented(split, idx, generator, shard, list(config.indices))
    else:
        planes, own = select_channels(shared[0], config.indices), shared[1]
    return ConfigGroup(normalize(planes, config), split.take_labels(own), config, shard.weight(len(idx)),
                       global_count=len(idx))


class _OneGroupPerStep:
    """What a strategy that trains one configuration per batch shares: batches, their count, the loss."""

    def _batches_of(self, split: SplitTensors, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        return _batches(torch.randperm(len(split), generator=generator), batch_size)

    def steps_per_epoch(self, images: int, batch_size: int) -> int:
        return len(range(0, images, batch_size))

    def group_sizes(self, batch_size: int) -> list[int]:
        return _check_group_sizes([batch_size], batch_size, 1)

    def loss(self, model: nn.Module, groups: list[ConfigGroup], label_smoothing: float,
             loss_fn: LossFn | None = None) -> StepResult:
        return _mean_loss(model, groups, loss_fn or _cross_entropy(label_smoothing))


@dataclass
class FixedConfig(_OneGroupPerStep):
    """Every batch in one configuration: a model trained for that configuration alone."""

    configs: tuple[ChannelConfig, ...]
    name: str = "fixed"
    #: Whether fit must recompute per-configuration batch-norm statistics after each epoch.
    precise_bn: bool = False

    def __post_init__(self) -> None:
        if len(self.configs) != 1:
            raise ValueError(f"the fixed strategy trains one configuration, got {len(self.configs)}")

    @property
    def config(self) -> ChannelConfig:
        return self.configs[0]

    def steps(self, split: SplitTensors, batch_size: int, generator: torch.Generator,
              shard: Shard = Shard()) -> Iterator[list[ConfigGroup]]:
        for idx in self._batches_of(split, batch_size, generator):
            yield [_group(split, idx, self.config, generator, shard)]

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "config": self.config.name}


@dataclass
class SampledConfig(_OneGroupPerStep):
    """One configuration per batch, drawn hierarchically (see :func:`sample_config`); each image once per epoch."""

    configs: tuple[ChannelConfig, ...] = ALL_CONFIGS
    name: str = "sampled"
    precise_bn: bool = True  # rare configurations' running averages lag behind the weights

    def __post_init__(self) -> None:
        if set(self.configs) != set(ALL_CONFIGS):
            raise ValueError("the sampled strategy draws from all seven configurations; use joint for a subset")

    def steps(self, split: SplitTensors, batch_size: int, generator: torch.Generator,
              shard: Shard = Shard()) -> Iterator[list[ConfigGroup]]:
        for idx in self._batches_of(split, batch_size, generator):
            yield [_group(split, idx, sample_config(generator), generator, shard)]

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "sampling": "hierarchical"}


@dataclass
class JointConfigs:
    """Several configurations per step, each a group of ``batch_size // configs_per_step`` images.

    - ``configs_per_step``: all seven (default), or fewer drawn by the sandwich rule.
    - ``share_images``: the groups see the same images and crops (needed for ``distill``);
      otherwise each group draws from its own permutation of the training set, so the step's
      gradients come from ``batch_size`` different images.
    - ``distill``: the subsets' loss is ``(1 - w) * CE(labels) + w * T^2 * KL(RGB logits, detached)``.
    - ``allocation`` (a key of :data:`ALLOCATIONS`): how the step's views are split between
      the configurations; ``uniform`` gives each ``batch_size // configs_per_step``. Another
      rule (all seven per step, own images only) draws each group from an endless stream of
      permutations, and the step's loss is the mean over its views, so a configuration with
      more views gets more of the update.

    An epoch is one pass of each group's permutation: every image is seen
    ``configs_per_step`` times, and with all seven, once by each configuration. Under another
    allocation an epoch has as many steps and views, and a configuration sees each image in
    proportion to its share. (Every step is full, so when the image count is not a multiple of
    the uniform group size, such an epoch has a few more views than a uniform one.)
    """

    configs: tuple[ChannelConfig, ...] = ALL_CONFIGS
    configs_per_step: int = len(ALL_CONFIGS)
    share_images: bool = False
    distill: bool = False
    distill_weight: float = 0.5
    temperature: float = 1.0
    allocation: str = "uniform"
    #: One pass of the shared body over all groups (the model's ``forward_groups``), instead of one per group.
    grouped: bool = True
    name: str = "joint"

    def __post_init__(self) -> None:
        if not 1 <= self.configs_per_step <= len(self.configs):
            raise ValueError(f"configs per step must be 1 to {len(self.configs)}, got {self.configs_per_step}")
        if self.distill and not self.share_images:
            raise ValueError("distillation needs the groups to share their images (share_images)")
        if self.distill and self.configs[0].num_channels != 3:
            raise ValueError("distillation needs RGB, the teacher, among the configurations")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose from {', '.join(ALLOCATIONS)}")
        if self.allocation != "uniform" and (self.share_images or self._sampled):
            raise ValueError(f"allocation {self.allocation} splits the views of a step that trains every "
                             "configuration on its own images: not with --share-images or --configs-per-step "
                             f"below {len(self.configs)}")

    @property
    def _sampled(self) -> bool:
        """Whether each step draws its configurations (fewer per step than the model has)."""
        return self.configs_per_step < len(self.configs)

    @property
    def precise_bn(self) -> bool:
        """Only when some configurations skip steps: otherwise every running average moves every step."""
        return self._sampled

    def group_size(self, batch_size: int) -> int:
        return _check_group_sizes([batch_size // self.configs_per_step], batch_size, self.configs_per_step)[0]

    def group_sizes(self, batch_size: int) -> list[int]:
        size = self.group_size(batch_size)
        if self.allocation == "uniform":
            return [size] * self.configs_per_step
        weights = [ALLOCATIONS[self.allocation](c) for c in self.configs]
        return _check_group_sizes(allocate(size * len(self.configs), weights), batch_size, len(self.configs))

    def steps_per_epoch(self, images: int, batch_size: int) -> int:
        return len(range(0, images, self.group_size(batch_size)))

    def steps(self, split: SplitTensors, batch_size: int, generator: torch.Generator,
              shard: Shard = Shard()) -> Iterator[list[ConfigGroup]]:
        if self.allocation != "uniform":
            yield from self._allocated_steps(split, batch_size, generator, shard)
            return
        size = self.group_size(batch_size)
        n = len(split)
        orders = [torch.randperm(n, generator=generator)
                  for _ in range(1 if self.share_images else self.configs_per_step)]
        for start in range(0, n, size):
            configs = (sandwich_configs(self.configs_per_step, generator, self.configs) if self._sampled
                       else list(self.configs))
            if self.share_images:
                idx = orders[0][start : start + size]
                if len(idx) < 2:
                    continue
                # One crop and flip for all groups: the distillation target describes the same pixels.
                shared = _augmented(split, idx, generator, shard)
                yield [_group(split, idx, c, generator, shard, shared) for c in configs]
            else:
                chunks = [order[start : start + size] for order in orders]
                if min(len(c) for c in chunks) < 2:
                    continue
                yield [_group(split, idx, c, generator, shard) for idx, c in zip(chunks, configs)]

    def _allocated_steps(self, split: SplitTensors, batch_size: int, generator: torch.Generator,
                         shard: Shard) -> Iterator[list[ConfigGroup]]:
        sizes = self.group_sizes(batch_size)
        streams = [_ImageStream(len(split), generator) for _ in self.configs]
        for _ in range(self.steps_per_epoch(len(split), batch_size)):
            groups = [_group(split, stream.take(size), c, generator, shard)
                      for stream, size, c in zip(streams, sizes, self.configs)]
            for g, size in zip(groups, sizes):
                g.weight *= size * len(sizes) / sum(sizes)  # the mean over groups becomes the mean over views
            yield groups

    def loss(self, model: nn.Module, groups: list[ConfigGroup], label_smoothing: float,
             loss_fn: LossFn | None = None) -> StepResult:
        criterion = loss_fn or _cross_entropy(label_smoothing)
        if not self.distill:
            return _mean_loss(model, groups, criterion, self.grouped)
        logits = group_logits(model, groups, self.grouped)
        teacher = next((lg for lg, g in zip(logits, groups) if g.config.num_channels == 3), None)
        losses = []
        for lg, g in zip(logits, groups):
            if teacher is None or g.config.num_channels == 3:
                losses.append(criterion(lg, g.loss_targets, g.inputs, g.config))
            else:  # the RGB prediction of the same images, as a fixed target
                losses.append(distillation_loss(lg, teacher.detach(), g.loss_targets, self.distill_weight,
                                                self.temperature, label_smoothing))
        return StepResult(_weighted_mean(losses, groups), groups, logits)

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_") and k != "configs"}
        if self.allocation == "uniform":
            del out["allocation"]  # as before the option existed: earlier checkpoints still resume
        if self.grouped:
            del out["grouped"]  # the same training up to float error: earlier checkpoints resume grouped
        out["configs"] = [c.name for c in self.configs]
        return {"strategy": self.name, **{k: v for k, v in out.items() if k != "name"}}


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) >= 2:  # batch norm cannot train on a single sample
            yield idx


def group_logits(model: nn.Module, groups: list[ConfigGroup], grouped: bool = True) -> list[torch.Tensor]:
    """Each group's logits: one grouped pass where the model has one (``forward_groups``), else a pass per group."""
    if grouped and len(groups) > 1 and hasattr(model, "forward_groups"):
        return model.forward_groups([g.inputs for g in groups], [g.config for g in groups])
    return [model(g.inputs, g.config) for g in groups]


def _mean_loss(model: nn.Module, groups: list[ConfigGroup], criterion: LossFn, grouped: bool = True) -> StepResult:
    logits = group_logits(model, groups, grouped)
    losses = [criterion(lg, g.loss_targets, g.inputs, g.config) for lg, g in zip(logits, groups)]
    return StepResult(_weighted_mean(losses, groups), groups, logits)


def _weighted_mean(losses: list[torch.Tensor], groups: list[ConfigGroup]) -> torch.Tensor:
    """The mean over groups; each group's loss scaled by its share's weight (1 in one process)."""
    if all(g.weight == 1.0 for g in groups):
        return torch.stack(losses).mean()
    return torch.stack([loss * g.weight for loss, g in zip(losses, groups)]).mean()


STRATEGIES: dict[str, Callable[..., TrainingStrategy]] = {
    "fixed": FixedConfig,
    "sampled": SampledConfig,
    "joint": JointConfigs,
}


def build_strategy(name: str, configs: tuple[ChannelConfig, ...], **options: Any) -> TrainingStrategy:
    """The strategy ``name`` for a model supporting ``configs``, as ``STRATEGIES[name](configs, **options)``.

    One configuration always means ``fixed``: there is nothing to mix, so another strategy's options do not apply.
    """
    if len(configs) == 1:
        name, options = "fixed", {}
    if name not in STRATEGIES:
        raise ValueError(f"unknown training strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name](configs, **options)
