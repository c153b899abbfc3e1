"""Channel configurations and per-channel normalisation: the one place both sides read.

Pure Python on purpose: the runtime imports this without torch, and training and
export import it from here rather than keeping their own copies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .errors import InvalidChannelsError

#: Colour planes of a decoded RGB image, in storage order.
CHANNEL_NAMES: tuple[str, ...] = ("R", "G", "B")

#: Per-channel statistics keyed by channel identity (ImageNet's), so that the G plane
#: is normalised the same way whether it arrives as "G", "RG" or "GB".
CHANNEL_MEAN: dict[str, float] = {"R": 0.485, "G": 0.456, "B": 0.406}
CHANNEL_STD: dict[str, float] = {"R": 0.229, "G": 0.224, "B": 0.225}


@dataclass(frozen=True)
class ChannelConfig:
    """A subset of R, G and B, named in canonical order (RGB, RG, GB, RB, R, G, B)."""

    name: str

    @property
    def indices(self) -> tuple[int, ...]:
        """Positions of this configuration's planes in an RGB image."""
        return tuple(CHANNEL_NAMES.index(c) for c in self.name)

    @property
    def num_channels(self) -> int:
        return len(self.name)

    @property
    def mask(self) -> tuple[int, ...]:
        """1 where the RGB plane is present, else 0."""
        return tuple(int(c in self.name) for c in CHANNEL_NAMES)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(CHANNEL_MEAN[c] for c in self.name)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(CHANNEL_STD[c] for c in self.name)

    @property
    def index(self) -> int:
        """Position in :data:`ALL_CONFIGS` (used to pick per-configuration parameters)."""
        return CONFIG_NAMES.index(self.name)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: "str | ChannelConfig") -> "ChannelConfig":
        """Parse one configuration, case-insensitively: ``"rg"``, ``"R,G"``, ``"r g"``.

        Raises :class:`InvalidChannelsError`, listing the valid names, for anything else
        (``"RR"``, ``"X"``, ``"BGR"``, ``""``).
        """
        if isinstance(text, ChannelConfig):
            return text
        key = re.sub(r"[\s,+]", "", str(text)).upper()
        if key not in CONFIG_NAMES:
            raise InvalidChannelsError(
                f"invalid channel configuration {text!r}: expected one of "
                f"{', '.join(CONFIG_NAMES)} (case-insensitive; 'all' for every one)"
            )
        return cls(key)


#: The seven configurations, widest first.
CONFIG_NAMES: tuple[str, ...] = ("RGB", "RG", "GB", "RB", "R", "G", "B")
ALL_CONFIGS: tuple[ChannelConfig, ...] = tuple(ChannelConfig(n) for n in CONFIG_NAMES)


def parse_channel_list(text: "str | Iterable[str]") -> list[ChannelConfig]:
    """Parse ``"all"``, one configuration, or a list: ``"RGB,R"``, ``"rgb;g"``, ``["RG", "B"]``.

    Commas separate configurations when more than one is meant; ``"R,G"`` alone is
    ambiguous, so it is read as the single configuration RG, as :meth:`ChannelConfig.parse` does.
    """
    if not isinstance(text, str):
        items = [str(t) for t in text]
    elif text.strip().lower() == "all":
        return list(ALL_CONFIGS)
    else:
        single = re.sub(r"[\s,+]", "", text).upper()
        if single in CONFIG_NAMES:
            return [ChannelConfig(single)]
        items = [t for t in re.split(r"[;,\s]+", text) if t]
    if not items:
        raise InvalidChannelsError(
            f"no channel configuration given: expected 'all' or one of {', '.join(CONFIG_NAMES)}"
        )
    configs: list[ChannelConfig] = []
    for item in items:
        if item.lower() == "all":
            configs.extend(c for c in ALL_CONFIGS if c not in configs)
            continue
        cfg = ChannelConfig.parse(item)
        if cfg not in configs:
            configs.append(cfg)
    return configs


def configs_with(num_channels: int) -> list[ChannelConfig]:
    """The configurations that have ``num_channels`` planes."""
    return [c for c in ALL_CONFIGS if c.num_channels == num_channels]
