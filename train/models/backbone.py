"""Any torchvision classification CNN as an any-channel model (``--backbone NAME``).

The network is torchvision's own, from its registry (``list_models``, ``get_model``), made
any-channel generically:

- its first convolution becomes a :class:`ChannelAdaptiveConv` with the same kernel size,
  stride, padding, dilation and bias (the backbone's own norm and activation after it stay);
- every normalisation layer (batch norm, layer norm, torchvision's ``LayerNorm2d``, group
  norm) becomes a :class:`ConfigNorm`: one copy per channel configuration;
- its classifier is built for ``num_classes`` by torchvision's builder.

``resolve(config)`` gives the plain torchvision network for one configuration. Which
models qualify is found by running each on the meta device (no weights, no arithmetic):
the first layer must be a convolution on the image itself, the network must run at other
image sizes than the one it was designed for, and it must return plain logits in training
(:func:`probe_backbone`). ``--init`` loads a torchvision state dict (:meth:`BackboneNet.initialise_from`),
``--pretrained`` torchvision's DEFAULT weights through the torch hub cache (:func:`pretrained_file`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torchvision

from runtime.channels import ALL_CONFIGS, CHANNEL_MEAN, CHANNEL_NAMES, CHANNEL_STD, ChannelConfig
from runtime.errors import AnyChannelError

from ..config import COMPACT  # our own network's name, defined where no torch is imported
from .layers import ChannelAdaptiveConv, ConfigNorm, PerConfig, activate_config, select_config
from .registry import register_model

#: Image side the probe runs at: not the 224 px the torchvision models are designed for, so a
#: network bound to one input size (ViT, MaxViT) shows itself.
PROBE_SIZE = 64
#: Normalisation layers kept per configuration; ``nn.LayerNorm`` covers torchvision's ``LayerNorm2d``.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
#: How many mismatched tensor names an error message lists.
LISTED_NAMES = 12


class BackboneError(AnyChannelError, ValueError):
    """A ``--backbone`` that is unknown, or a torchvision model that cannot become any-channel."""


class InitWeightsError(AnyChannelError, ValueError):
    """An ``--init`` file that is not a state dict of the backbone's architecture; ``mismatched`` names the tensors."""

    def __init__(self, message: str, mismatched: list[str] | None = None) -> None:
        super().__init__(message)
        self.mismatched = mismatched or []


class PretrainedUnavailableError(AnyChannelError, RuntimeError):
    """``--pretrained`` weights that cannot be had: offline and not in the torch hub cache, or other statistics."""


# --- which torchvision models qualify -------------------------------------------------------


def torchvision_classifiers() -> list[str]:
    """Every classification model in torchvision's registry, qualifying or not."""
    return torchvision.models.list_models(module=torchvision.models)


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create parameters on the meta device while the builder's own code runs normally.

    ``torch.device("meta")`` as a context would also move the builder's plain tensor
    arithmetic there (RegNet computes its widths with torch), which then cannot be read back.
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.data.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_torchvision(name: str, num_classes: int, meta: bool = False) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)``; on the meta device if ``meta``."""
    with warnings.catch_warnings(), (_parameters_on_meta() if meta else contextlib.nullcontext()):
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet and Inception warn about their init
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return model.to("meta") if meta else model


@dataclass(frozen=True)
class BackboneProbe:
    """What running a torchvision model on the meta device showed."""

    name: str
    #: Module path of the first convolution, the one that becomes the channel-adaptive stem.
    stem: str | None
    #: Why it cannot be an any-channel backbone; None when it can.
    problem: str | None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:120]}" if text else type(exc).__name__


@functools.lru_cache(maxsize=None)
def probe_backbone(name: str, image_size: int = PROBE_SIZE) -> BackboneProbe:
    """Run torchvision's ``name`` once, in training mode, on a meta ``2 x 3 x S x S`` batch.

    It qualifies when the first layer that runs is a ``Conv2d`` over the 3 planes of the
    image itself (not of a transformed copy: Inception rescales its input first), the
    network runs at ``image_size`` (ViT and MaxViT are built for one size) and it returns
    a plain ``batch x classes`` tensor (GoogLeNet and Inception add auxiliary outputs).
    """
    if name not in torchvision_classifiers():
        return BackboneProbe(name, None, "not a torchvision classification model")
    model = build_torchvision(name, num_classes=10, meta=True).train()
    x = torch.empty(2, 3, image_size, image_size, device="meta")
    first: list[tuple[str, nn.Module, bool]] = []

    def record(path: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not first:
                first.append((path, module, bool(args) and args[0] is x))
        return hook

    hooks = [m.register_forward_pre_hook(record(path)) for path, m in model.named_modules()
             if next(m.children(), None) is None]
    out, failure = None, None
    try:
        out = model(x)
    except Exception as exc:  # the models raise many types: each is a reason to refuse
        failure = _first_line(exc)
    finally:
        for h in hooks:
            h.remove()
    if not first:
        return BackboneProbe(name, None, f"it takes no {image_size} px images: it fails before its first layer "
                                         f"({failure})")
    path, module, on_image = first[0]
    if not isinstance(module, nn.Conv2d):
        return BackboneProbe(name, None, f"its first layer is {type(module).__name__} ({path}), not a convolution")
    if not on_image:
        return BackboneProbe(name, None, f"its first convolution ({path}) sees a transformed copy of the image")
    if module.in_channels != 3 or module.groups != 1 or isinstance(module.padding, str):
        return BackboneProbe(name, None, f"its first convolution ({path}) is not a plain 3-channel convolution")
    if failure is not None:
        return BackboneProbe(name, path, f"it does not run on {image_size} px images ({failure})")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
        return BackboneProbe(name, path, f"in training it returns {type(out).__name__}, not plain logits")
    return BackboneProbe(name, path, None)


@functools.lru_cache(maxsize=1)
def available_backbones() -> tuple[str, ...]:
    """``compact`` and every torchvision classification model that qualifies (seconds: each is probed)."""
    return (COMPACT, *(n for n in torchvision_classifiers() if probe_backbone(n).problem is None))


def check_backbone(name: str, image_size: int | None = None) -> None:
    """Raise :class:`BackboneError`, listing the valid names, unless ``name`` can be our backbone.

    ``image_size``: also check that the network takes images of that side.
    """
    if name == COMPACT:
        return
    problem = probe_backbone(name).problem
    if problem is not None:
        what = (f"unknown backbone {name!r}" if name not in torchvision_classifiers()
                else f"torchvision's {name} cannot be an any-channel backbone: {problem}")
        raise BackboneError(f"{what}; choose from {', '.join(available_backbones())}")
    if image_size is not None and image_size != PROBE_SIZE:
        problem = probe_backbone(name, image_size).problem
        if problem is not None:
            raise BackboneError(f"backbone {name} at --image-size {image_size}: {problem}")


# --- the model --------------------------------------------------------------------------------


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


@register_model("backbone")
class BackboneNet(nn.Module):
    """A torchvision classification CNN with a channel-adaptive stem and per-configuration norms."""

    multi_config = True
    supported_configs = ALL_CONFIGS

    def __init__(self, num_classes: int, backbone: str, num_kernels: int = 4) -> None:
        super().__init__()
        check_backbone(backbone)
        stem = probe_backbone(backbone).stem
        assert stem is not None  # check_backbone refuses models without one
        net = build_torchvision(backbone, num_classes)
        _replace(net, stem, ChannelAdaptiveConv.from_conv(net.get_submodule(stem), num_kernels))
        for path, module in list(net.named_modules()):
            if isinstance(module, NORM_TYPES):
                _replace(net, path, ConfigNorm(module))
        self.net, self.backbone, self.stem_path = net, backbone, stem

    def forward(self, x: torch.Tensor, config: ChannelConfig | None = None) -> torch.Tensor:
        if config is None:
            raise ValueError("BackboneNet needs the input's channel configuration")
        activate_config(self.net, config)
        return self.net(x)

    def resolve(self, config: ChannelConfig) -> nn.Module:
        """torchvision's network for ``config`` alone: a resolved stem, that configuration's norms."""
        return select_config(self.net, config)

    def _expand(self, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """A torchvision tensor name and value -> the tensors of ours it seeds."""
        path, _, leaf = key.rpartition(".")
        owner = self.net.get_submodule(path) if path else self.net
        if isinstance(owner, PerConfig):
            return {f"{path}.{name}": value for name, value in owner.expand_plain(leaf, tensor).items()}
        return {key: tensor}

    def initialise_from(self, path: "str | os.PathLike[str]") -> "InitReport":
        """Load a torchvision state dict for this backbone (what torchvision's weights API downloads).

        Every tensor that fits loads: the first convolution's RGB kernel (and bias) seeds all K
        stem kernels, each norm seeds all seven configurations' copies, a classifier for
        another class count is left re-initialised. A file of another architecture raises
        :class:`InitWeightsError` naming the mismatched tensors.
        """
        state = read_state_dict(path)
        plan = match_state(self.backbone, state, str(path))
        ours = {k: v.shape for k, v in self.net.state_dict().items()}
        wrong_classes = [k for k in state if k in plan.class_dependent and ours.get(k) != state[k].shape]
        expanded: dict[str, torch.Tensor] = {}
        for key in plan.fitting:
            if key not in wrong_classes:
                expanded.update(self._expand(key, state[key]))
        result = self.net.load_state_dict(expanded, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys  # match_state checked every name
        # Ours that have a torchvision counterpart the file did not give; the rest are new.
        counterparts = {k for key in wrong_classes + plan.absent for k in self._expand(key, torch.zeros(()))}
        return InitReport(str(path), self.backbone, loaded=[k for k in plan.fitting if k not in wrong_classes],
                          reinitialised=wrong_classes, absent=plan.absent,
                          new=[k for k in result.missing_keys if k not in counterparts])


# --- --init: torchvision state dicts ----------------------------------------------------------


@dataclass
class InitReport:
    """What ``--init`` loaded, by torchvision tensor name, and what kept its fresh initialisation."""

    source: str
    backbone: str
    #: File tensors loaded.
    loaded: list[str] = field(default_factory=list)
    #: File tensors of another class count (the classifier), left re-initialised.
    reinitialised: list[str] = field(default_factory=list)
    #: Architecture tensors the file lacks (only ``num_batches_tracked`` counters are tolerated).
    absent: list[str] = field(default_factory=list)
    #: Our model's tensors with no torchvision counterpart (the stem's kernel attention), freshly initialised.
    new: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = len(self.loaded) + len(self.reinitialised)
        lines = [f"--init {self.source}: loaded {len(self.loaded)} of its {total} tensors into {self.backbone}"]
        if self.reinitialised:
            lines.append(f"  not loaded (another class count; re-initialised): {', '.join(self.reinitialised)}")
        if self.absent:
            lines.append(f"  absent from the file (fresh): {', '.join(self.absent)}")
        if self.new:
            lines.append(f"  new in the any-channel model (fresh): {', '.join(self.new)}")
        return "\n".join(lines)


@dataclass
class StatePlan:
    fitting: list[str]
    class_dependent: set[str]
    absent: list[str]


def read_state_dict(path: "str | os.PathLike[str]") -> Mapping[str, torch.Tensor]:
    """A state dict file, loaded with ``weights_only=True``; anything else raises :class:`InitWeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise InitWeightsError(f"--init file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise InitWeightsError(f"--init file {path} is corrupt or not a PyTorch file ({type(exc).__name__})") from None
    if isinstance(state, Mapping) and "state_dict" in state and "format" in state:
        raise InitWeightsError(f"--init file {path} is an anychannel checkpoint, not a torchvision state dict; "
                               "use it with --resume or export it")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InitWeightsError(f"--init file {path} is not a state dict (a mapping of names to tensors)")
    return state


@functools.lru_cache(maxsize=None)
def _reference_shapes(backbone: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_torchvision(backbone, num_classes, meta=True).state_dict().items()}


def match_state(backbone: str, state: Mapping[str, torch.Tensor], source: str) -> StatePlan:
    """Check ``state`` against torchvision's ``backbone`` and say which tensors fit.

    The class-dependent tensors (the classifier) are those whose shape changes with the
    class count; they may have any. Everything else must match by name and shape; only
    batch norms' ``num_batches_tracked`` counters may be absent (old files lack them).
    """
    expected = _reference_shapes(backbone, 2)
    class_dependent = {k for k, shape in _reference_shapes(backbone, 3).items() if expected[k] != shape}
    mismatched = [f"{k} (not in {backbone})" for k in state if k not in expected]
    mismatched += [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in state
                   if k in expected and k not in class_dependent and tuple(state[k].shape) != expected[k]]
    absent = [k for k in expected if k not in state]
    mismatched += [f"{k} (missing)" for k in absent if not k.endswith("num_batches_tracked")]
    if mismatched:
        listed = ", ".join(mismatched[:LISTED_NAMES]) + (f", ... (+{len(mismatched) - LISTED_NAMES} more)"
                                                         if len(mismatched) > LISTED_NAMES else "")
        raise InitWeightsError(f"--init file {source} is not a state dict of torchvision's {backbone}: "
                               f"{len(mismatched)} tensor(s) do not fit: {listed}", mismatched)
    return StatePlan([k for k in state if k in expected], class_dependent, absent)


def check_init_file(backbone: str, path: "str | os.PathLike[str]") -> None:
    """Refuse (before any data work) an ``--init`` file that is not a state dict of ``backbone``."""
    match_state(backbone, read_state_dict(path), str(path))


# --- --pretrained: torchvision's DEFAULT weights, via the torch hub cache --------------------


def pretrained_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """torchvision's DEFAULT weights for ``backbone``, refused unless trained with our normalisation.

    The graphs normalise each plane with ImageNet's statistics (``runtime.channels``); weights
    trained with others would see shifted inputs, so they are refused rather than recorded.
    """
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    transforms = weights.transforms()
    mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    ours_mean = [CHANNEL_MEAN[c] for c in CHANNEL_NAMES]
    ours_std = [CHANNEL_STD[c] for c in CHANNEL_NAMES]
    if mean is None or std is None or any(abs(a - b) > 1e-6 for a, b in zip([*mean, *std], [*ours_mean, *ours_std])):
        raise PretrainedUnavailableError(
            f"{weights} normalises with mean {mean} and std {std}, but the exported graphs use ImageNet's "
            f"(mean {ours_mean}, std {ours_std}); these weights cannot be used with --pretrained")
    return weights


def pretrained_cache_path(backbone: str) -> Path:
    """Where torch hub keeps ``backbone``'s DEFAULT weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    url = pretrained_weights(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def pretrained_file(backbone: str) -> Path:
    """The DEFAULT weights file for ``backbone``, downloaded into the torch hub cache unless already there.

    Offline, raises :class:`PretrainedUnavailableError` naming the exact file to place there.
    """
    if backbone == COMPACT:
        raise BackboneError("--pretrained needs a torchvision backbone (--backbone resnet18, ...), not compact")
    weights = pretrained_weights(backbone)
    path = pretrained_cache_path(backbone)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), match.group(1) if match else None, progress=True)
    except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "not available here"
        raise PretrainedUnavailableError(
            f"cannot download {weights} from {weights.url} ({_first_line(exc)}). Offline, download it on a "
            f"machine with internet and place it at {path} (torch.hub.get_dir()/checkpoints/{path.name}), "
            f"or pass --init PATH with a torchvision state dict for {backbone}") from None
    return path
