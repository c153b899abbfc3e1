"""Training strategies: which channel configurations each step trains, on which images, with which loss.

``engine.fit`` runs the plain loop (optimizer, schedule, checkpoints); a strategy decides what one
step is. Strategies are built by name (``build_strategy(name, configs, **options)``), so a new
method is a new class here, not a branch in ``fit``.

- ``fixed``: one configuration for every batch (the naive and task-2 models).
- ``sampled``: one configuration per batch, drawn by ChannelViT's hierarchical rule (a
  channel count uniformly, then a subset of that size). Every image is seen once per
  epoch; R, G and B each get a ninth of the batches.

The others train several configurations per step, each on its own group of images, gradients
summed into one update. Each is a :class:`ComposedStrategy` of three parts: which configurations
(:class:`EveryConfig`, :class:`SandwichDraw`), which images (:class:`OwnImages`,
:class:`SharedImages`, :class:`AllocatedImages`) and what each group learns from
(:class:`LabelLoss`, :class:`InPlaceDistillation`).

- ``joint`` (our default for the any-channel model): every configuration every step, each group
  on its own images. With all seven, an epoch shows every image once *to every configuration*:
  exactly the (image, configuration) pairs the seven per-configuration models see, so the compute
  matches theirs, but one shared network takes all the updates. ``allocation`` splits a step's
  views unevenly between the configurations.
- ``sandwich``: fewer configurations per step, chosen by the sandwich rule, each on its own images.
- ``shared`` and ``distill``, the slimmable-network variants: the groups share their images and
  crops; with ``distill`` the subsets also learn from the RGB logits of those images (in-place
  distillation, Yu & Huang 2019). Every configuration per step, or the sandwich rule's few.

Task 1's flags (``--strategy joint`` and its options) name one of these in ``train.task1.Task1Options``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Iterator, Protocol

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
        return _step_loss(model, groups, LabelLoss(), label_smoothing, loss_fn)


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


# A strategy that trains several configurations per step is three parts: which configurations a
# step trains, which images each group sees, and what each group learns from. The named
# strategies below combine them so that any value of one option goes with any of another.


class ConfigChoice(Protocol):
    """Which configurations each step trains."""

    configs: tuple[ChannelConfig, ...]

    @property
    def per_step(self) -> int:
        """How many configurations, so groups, each step trains."""

    @property
    def skips(self) -> bool:
        """Whether some configurations skip steps (then fit recomputes their batch-norm statistics)."""

    def draw(self, generator: torch.Generator) -> list[ChannelConfig]:
        """The next step's configurations, in ``configs``' order."""


@dataclass(frozen=True)
class EveryConfig:
    """Every configuration, every step."""

    configs: tuple[ChannelConfig, ...]

    @property
    def per_step(self) -> int:
        return len(self.configs)

    @property
    def skips(self) -> bool:
        return False

    def draw(self, generator: torch.Generator) -> list[ChannelConfig]:
        return list(self.configs)  # nothing drawn: the generator's stream is the images' alone


@dataclass(frozen=True)
class SandwichDraw:
    """``per_step`` configurations each step by the sandwich rule (:func:`sandwich_configs`): RGB,
    a one-channel one and the rest at random; all of them when ``per_step`` is their number."""

    configs: tuple[ChannelConfig, ...]
    per_step: int

    def __post_init__(self) -> None:
        if not 1 <= self.per_step <= len(self.configs):
            raise ValueError(f"configs per step must be 1 to {len(self.configs)}, got {self.per_step}")

    @property
    def skips(self) -> bool:
        return self.per_step < len(self.configs)

    def draw(self, generator: torch.Generator) -> list[ChannelConfig]:
        return sandwich_configs(self.per_step, generator, self.configs)


def choose_configs(configs: tuple[ChannelConfig, ...], per_step: int | None) -> ConfigChoice:
    """Every configuration each step (``per_step`` None or their number), else ``per_step`` of them by
    the sandwich rule."""
    return EveryConfig(configs) if per_step in (None, len(configs)) else SandwichDraw(configs, per_step)


class GroupImages(Protocol):
    """Which images each group of a step sees, over one epoch."""

    def group_sizes(self, group_size: int, choice: ConfigChoice) -> list[int]:
        """The images in each group of a step whose equal split gives ``group_size`` to each."""

    def epoch(self, split: SplitTensors, sizes: list[int], steps: int, generator: torch.Generator, shard: Shard,
              choose: Callable[[], list[ChannelConfig]]) -> Iterator[list[ConfigGroup]]:
        """One epoch of at most ``steps`` steps, groups of ``sizes`` images; ``choose()`` draws each
        step's configurations."""

    def describe(self) -> dict[str, Any]:
        """These options, as :meth:`ComposedStrategy.describe` words them."""


def _slices(orders: list[torch.Tensor], size: int, choose: Callable[[], list[ChannelConfig]]
            ) -> Iterator[tuple[list[ChannelConfig], list[torch.Tensor]]]:
    """Each step's configurations and next ``size`` images of each of ``orders``.

    A step with a slice under the 2 images batch norm needs is skipped after its configurations
    are drawn: the generator's stream stays the one earlier runs drew.
    """
    for start in range(0, len(orders[0]), size):
        configs = choose()
        chunks = [order[start : start + size] for order in orders]
        if min(len(c) for c in chunks) >= 2:
            yield configs, chunks


class _EqualGroups:
    """Groups of one size: a step's views split evenly between its configurations."""

    def group_sizes(self, group_size: int, choice: ConfigChoice) -> list[int]:
        return [group_size] * choice.per_step


class OwnImages(_EqualGroups):
    """Each group its own permutation of the training set: a step's gradients come from as many
    different images as it has views, and an epoch shows every image once to each group."""

    def epoch(self, split: SplitTensors, sizes: list[int], steps: int, generator: torch.Generator, shard: Shard,
              choose: Callable[[], list[ChannelConfig]]) -> Iterator[list[ConfigGroup]]:
        orders = [torch.randperm(len(split), generator=generator) for _ in sizes]
        for configs, chunks in _slices(orders, sizes[0], choose):
            yield [_group(split, idx, c, generator, shard) for idx, c in zip(chunks, configs)]

    def describe(self) -> dict[str, Any]:
        return {"share_images": False}


class SharedImages(_EqualGroups):
    """One permutation for all groups, and one crop and flip: a step's configurations see the same pixels."""

    def epoch(self, split: SplitTensors, sizes: list[int], steps: int, generator: torch.Generator, shard: Shard,
              choose: Callable[[], list[ChannelConfig]]) -> Iterator[list[ConfigGroup]]:
        order = torch.randperm(len(split), generator=generator)
        for configs, (idx,) in _slices([order], sizes[0], choose):
            # One crop and flip for all groups: a distillation target describes the same pixels.
            shared = _augmented(split, idx, generator, shard)
            yield [_group(split, idx, c, generator, shard, shared) for c in configs]

    def describe(self) -> dict[str, Any]:
        return {"share_images": True}


@dataclass(frozen=True)
class AllocatedImages:
    """For a step that trains every configuration: each its share of the step's views by
    ``allocation`` (a key of :data:`ALLOCATIONS`), from its own endless stream of permutations.

    An epoch has as many steps and views as the equal split's, and a configuration sees each image
    in proportion to its share; each group's weight makes the step's loss the mean over its views,
    so a configuration with more views gets more of the update. (Every step is full: when the image
    count is not a multiple of the equal group size, such an epoch has a few more views.)
    """

    allocation: str

    def __post_init__(self) -> None:
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose from {', '.join(ALLOCATIONS)}")

    def group_sizes(self, group_size: int, choice: ConfigChoice) -> list[int]:
        weights = [ALLOCATIONS[self.allocation](c) for c in choice.configs]
        return allocate(group_size * len(choice.configs), weights)

    def epoch(self, split: SplitTensors, sizes: list[int], steps: int, generator: torch.Generator, shard: Shard,
              choose: Callable[[], list[ChannelConfig]]) -> Iterator[list[ConfigGroup]]:
        streams = [_ImageStream(len(split), generator) for _ in sizes]
        for _ in range(steps):
            groups = [_group(split, stream.take(size), c, generator, shard)
                      for stream, size, c in zip(streams, sizes, choose())]
            for g, size in zip(groups, sizes):
                g.weight *= size * len(sizes) / sum(sizes)  # the mean over groups becomes the mean over views
            yield groups

    def describe(self) -> dict[str, Any]:
        return {"share_images": False, "allocation": self.allocation}


class GroupObjective(Protocol):
    """What each group of a step learns from, given every group's logits."""

    #: Whether a group learns from another group's logits: then mixing images (``--mix``) cannot serve it.
    distills: bool

    def losses(self, logits: list[torch.Tensor], groups: list[ConfigGroup], criterion: LossFn,
               label_smoothing: float) -> list[torch.Tensor]:
        """Each group's loss; ``criterion`` is cross-entropy or the run's ``loss_fn``."""

    def describe(self) -> dict[str, Any]:
        """These options, as :meth:`ComposedStrategy.describe` words them."""


class LabelLoss:
    """Each group learns from its own labels (or mixed targets) alone."""

    distills = False

    def losses(self, logits: list[torch.Tensor], groups: list[ConfigGroup], criterion: LossFn,
               label_smoothing: float) -> list[torch.Tensor]:
        return [criterion(lg, g.loss_targets, g.inputs, g.config) for lg, g in zip(logits, groups)]

    def describe(self) -> dict[str, Any]:
        # Descriptions have always listed distillation's settings, at their defaults when it is off.
        return {"distill": False, **asdict(InPlaceDistillation())}


@dataclass(frozen=True)
class InPlaceDistillation:
    """In-place distillation (Yu & Huang 2019): RGB learns from its labels, each other group from
    ``(1 - distill_weight) * CE(labels) + distill_weight * T^2 * KL(RGB logits, detached)``.

    For groups that share their images, RGB among every step's configurations (the sandwich rule keeps it).
    """

    distill_weight: float = 0.5
    temperature: float = 1.0
    distills: ClassVar[bool] = True

    def losses(self, logits: list[torch.Tensor], groups: list[ConfigGroup], criterion: LossFn,
               label_smoothing: float) -> list[torch.Tensor]:
        # The RGB prediction of the same images, as a fixed target.
        teacher = next(lg for lg, g in zip(logits, groups) if g.config.num_channels == 3).detach()
        return [criterion(lg, g.loss_targets, g.inputs, g.config) if g.config.num_channels == 3
                else distillation_loss(lg, teacher, g.loss_targets, self.distill_weight, self.temperature,
                                       label_smoothing)
                for lg, g in zip(logits, groups)]

    def describe(self) -> dict[str, Any]:
        return {"distill": True, **asdict(self)}


class ComposedStrategy:
    """Several configurations per step, each on a group of images, their gradients summed into one
    update: ``choice`` picks a step's configurations, ``images`` each group's images, ``objective``
    what each group learns from. Groups hold ``batch_size // configurations per step`` images unless
    ``images`` splits the views otherwise.
    """

    name: str

    def __init__(self, choice: ConfigChoice, images: GroupImages, objective: GroupObjective,
                 grouped: bool = True) -> None:
        self.choice, self.images, self.objective = choice, images, objective
        #: One pass of the shared body over all groups (the model's ``forward_groups``), instead of one per group.
        self.grouped = grouped

    @property
    def configs(self) -> tuple[ChannelConfig, ...]:
        return self.choice.configs

    @property
    def precise_bn(self) -> bool:
        """Only when some configurations skip steps: otherwise every running average moves every step."""
        return self.choice.skips

    @property
    def distill(self) -> bool:
        """Whether a group learns from another's logits (in-place distillation), which mixing cannot serve."""
        return self.objective.distills

    def group_size(self, batch_size: int) -> int:
        """The images of each group when a step's views are split evenly."""
        per_step = self.choice.per_step
        return _check_group_sizes([batch_size // per_step], batch_size, per_step)[0]

    def group_sizes(self, batch_size: int) -> list[int]:
        sizes = self.images.group_sizes(self.group_size(batch_size), self.choice)
        return _check_group_sizes(sizes, batch_size, len(sizes))

    def steps_per_epoch(self, images: int, batch_size: int) -> int:
        return len(range(0, images, self.group_size(batch_size)))

    def steps(self, split: SplitTensors, batch_size: int, generator: torch.Generator,
              shard: Shard = Shard()) -> Iterator[list[ConfigGroup]]:
        yield from self.images.epoch(split, self.group_sizes(batch_size), self.steps_per_epoch(len(split), batch_size),
                                     generator, shard, lambda: self.choice.draw(generator))

    def loss(self, model: nn.Module, groups: list[ConfigGroup], label_smoothing: float,
             loss_fn: LossFn | None = None) -> StepResult:
        return _step_loss(model, groups, self.objective, label_smoothing, loss_fn, self.grouped)

    def describe(self) -> dict[str, Any]:
        """The options, worded as ``--strategy joint`` and its flags: checkpoints have held this
        since one joint strategy took them all, and ``--resume`` compares it, so theirs resume."""
        out = {"strategy": "joint", "configs_per_step": self.choice.per_step, **self.images.describe(),
               **self.objective.describe()}
        if not self.grouped:
            out["grouped"] = False  # the same training up to float error: earlier checkpoints resume grouped
        return {**out, "configs": [c.name for c in self.configs]}


class JointStrategy(ComposedStrategy):
    """Every configuration every step, each group on its own images: our default.

    With all seven, an epoch shows every image once to every configuration: exactly the (image,
    configuration) pairs the seven per-configuration models see. ``allocation`` other than
    ``uniform`` splits each step's views unevenly instead (:class:`AllocatedImages`).
    """

    name = "joint"

    def __init__(self, configs: tuple[ChannelConfig, ...] = ALL_CONFIGS, allocation: str = "uniform",
                 grouped: bool = True) -> None:
        images = OwnImages() if allocation == "uniform" else AllocatedImages(allocation)
        super().__init__(EveryConfig(configs), images, LabelLoss(), grouped)


class SandwichStrategy(ComposedStrategy):
    """``configs_per_step`` configurations per step by the sandwich rule, each on its own images:
    every image is seen ``configs_per_step`` times per epoch."""

    name = "sandwich"

    def __init__(self, configs: tuple[ChannelConfig, ...] = ALL_CONFIGS, configs_per_step: int = 3,
                 grouped: bool = True) -> None:
        super().__init__(SandwichDraw(configs, configs_per_step), OwnImages(), LabelLoss(), grouped)


class SharedStrategy(ComposedStrategy):
    """The groups of a step share their images and crops (the slimmable-network recipe): every
    configuration, or ``configs_per_step`` of them by the sandwich rule."""

    name = "shared"

    def __init__(self, configs: tuple[ChannelConfig, ...] = ALL_CONFIGS, configs_per_step: int | None = None,
                 grouped: bool = True) -> None:
        super().__init__(choose_configs(configs, configs_per_step), SharedImages(), LabelLoss(), grouped)


class DistillStrategy(ComposedStrategy):
    """As ``shared``, and the subsets also learn from the RGB logits of the same images
    (:class:`InPlaceDistillation`)."""

    name = "distill"

    def __init__(self, configs: tuple[ChannelConfig, ...] = ALL_CONFIGS, configs_per_step: int | None = None,
                 distill_weight: float = 0.5, temperature: float = 1.0, grouped: bool = True) -> None:
        if configs[0].num_channels != 3:
            raise ValueError("distillation needs RGB, the teacher, among the configurations")
        super().__init__(choose_configs(configs, configs_per_step), SharedImages(),
                         InPlaceDistillation(distill_weight, temperature), grouped)


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


def _step_loss(model: nn.Module, groups: list[ConfigGroup], objective: GroupObjective, label_smoothing: float,
               loss_fn: LossFn | None, grouped: bool = True) -> StepResult:
    """Forward every group; the step's loss is the mean of ``objective``'s losses over the groups."""
    logits = group_logits(model, groups, grouped)
    losses = objective.losses(logits, groups, loss_fn or _cross_entropy(label_smoothing), label_smoothing)
    return StepResult(_weighted_mean(losses, groups), groups, logits)


def _weighted_mean(losses: list[torch.Tensor], groups: list[ConfigGroup]) -> torch.Tensor:
    """The mean over groups; each group's loss scaled by its share's weight (1 in one process)."""
    if all(g.weight == 1.0 for g in groups):
        return torch.stack(losses).mean()
    return torch.stack([loss * g.weight for loss, g in zip(losses, groups)]).mean()


STRATEGIES: dict[str, Callable[..., TrainingStrategy]] = {
    "fixed": FixedConfig,
    "sampled": SampledConfig,
    "joint": JointStrategy,
    "sandwich": SandwichStrategy,
    "shared": SharedStrategy,
    "distill": DistillStrategy,
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
