"""A run's settings, validated, with a one-line error for every bad value.

``Config`` is what the command line builds and what a recording's header stores. Fields
left as ``None`` are filled from the dataset's suggested values by :meth:`Config.resolved`
(a learning rate that suits 0..255 CIFAR pixels is useless on the 2-D spiral).
The live controls (lr, λ, batch size, loss, optimizer, on-diverge) go through
:func:`validate_control`, the one place that says what a valid value is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.data import Dataset

LOSSES = ("svm", "softmax")
OPTIMIZERS = ("sgd", "gd", "random", "local")
ON_DIVERGE = ("pause", "rescue", "stop", "ignore")
BATCH_LADDER = (32, 64, 128, 256, 512, 1024)
"""Batch sizes the ``b``/``B`` keys step through; after 1024 comes the full set (GD)."""


class ConfigError(ValueError):
    """A setting is invalid; the message is one line that says what to do."""


@dataclass
class Config:
    """Everything that determines a run, apart from the dataset's contents."""

    data: str = "synthetic"  # dataset spec (see engine.data.load_dataset)
    loss: str = "softmax"  # "svm" | "softmax"
    optimizer: str = "sgd"  # "sgd" | "gd" (full batch) | "random" | "local" (search)
    lr: float | None = None  # learning rate α; None: the dataset's suggestion for the loss
    reg: float | None = None  # L2 strength λ; None: the dataset's suggestion
    batch_size: int = 256  # rows per step; gd ignores it and uses every row
    seed: int = 0  # seeds the trainer's numpy Generator (init W, batches, proposals)
    steps: int | None = None  # stop after this many steps; None runs until quit
    eval_every: int = 200  # steps between evaluations (val accuracy and loss)
    on_diverge: str = "pause"  # what an alarm does: pause | rescue | stop | ignore
    init_scale: float | None = None  # std of the initial W; None: dataset suggestion
    sigma: float | None = None  # random local search step size; None: dataset suggestion
    num_val: int | None = None  # validation rows split off the training set; None: default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Build from a recording header's dict; unknown keys are ignored (newer writers)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def resolved(self, dataset: Dataset) -> Config:
        """A copy with every ``None`` filled from ``dataset.defaults``, then validated."""
        d = dataset.defaults
        lr = self.lr
        if lr is None:
            lr_default = d.get("lr", 1e-3)
            lr = lr_default[self.loss] if isinstance(lr_default, dict) else lr_default
        out = replace(
            self,
            lr=float(lr),
            reg=float(d.get("reg", 0.0) if self.reg is None else self.reg),
            init_scale=float(d.get("init_scale", 1e-3) if self.init_scale is None
                             else self.init_scale),
            sigma=float(d.get("sigma", 1e-3) if self.sigma is None else self.sigma),
        )
        out.validate(num_train=dataset.num_train)
        return out

    def validate(self, num_train: int | None = None) -> None:
        """Raise ConfigError naming the first invalid field."""
        validate_control("loss", self.loss)
        validate_control("optimizer", self.optimizer)
        validate_control("on_diverge", self.on_diverge)
        if self.lr is not None:
            validate_control("lr", self.lr)
        if self.reg is not None:
            validate_control("reg", self.reg)
        validate_control("batch_size", self.batch_size, num_train)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 0):
            raise ConfigError(f"steps must be a whole number >= 0, got {self.steps!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ConfigError(f"eval_every must be a whole number >= 1, got {self.eval_every!r}")
        for name in ("init_scale", "sigma"):
            v = getattr(self, name)
            if v is not None and not (_is_number(v) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        if self.num_val is not None and (not isinstance(self.num_val, int) or self.num_val < 1):
            raise ConfigError(f"num_val must be a whole number >= 1, got {self.num_val!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_number(text: str, what: str) -> float:
    """Parse a typed number like ``1e-3`` or ``2.5e4``; ConfigError if it is not one."""
    try:
        return float(text.strip())
    except (ValueError, AttributeError):
        raise ConfigError(f"{what}: {text!r} is not a number (try e.g. 1e-3)") from None


def validate_control(name: str, value: Any, num_train: int | None = None) -> Any:
    """Check one live setting and return it in canonical form.

    Args:
        name: lr, reg, batch_size, loss, optimizer or on_diverge.
        value: the proposed value (numbers may be given as strings, as typed).
        num_train: training-set size, the upper bound for the batch size.

    Returns:
        The value as the trainer stores it (float, int or str).

    Raises:
        ConfigError: one line naming the problem and the valid range.
    """
    if name in ("lr", "reg", "batch_size") and isinstance(value, str):
        value = parse_number(value, name)
    if name == "lr":
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"learning rate must be a finite number > 0, got {value!r}")
        return float(value)
    if name == "reg":
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"λ (reg) must be a finite number >= 0, got {value!r}")
        return float(value)
    if name == "batch_size":
        if not _is_number(value) or value != int(value) or value < 1:
            raise ConfigError(f"batch size must be a whole number >= 1, got {value!r}")
        value = int(value)
        if num_train is not None and value > num_train:
            raise ConfigError(
                f"batch size {value} is larger than the training set ({num_train} rows)"
            )
        return value
    choices = {"loss": LOSSES, "optimizer": OPTIMIZERS, "on_diverge": ON_DIVERGE}.get(name)
    if choices is None:
        raise ConfigError(f"unknown setting {name!r}")
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
