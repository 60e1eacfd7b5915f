"""LeNet-style CNN; the unshared twin swaps every Conv2d for a LocallyConnected2d, the soft one for a
SoftSharedConv2d (W_p = W + D_p; its penalty is the offsets' weight decay where that is exact, with
SGD or Adam and no gradient clipping (psx.penalty_decay), else added to the loss by `regularizer()`)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models.families.cnn import CNNConfig
from psx.models.locally_connected import LocallyConnected2d, conv_output_size
from psx.models.mlp import mlp_head
from psx.models.soft_shared import SoftSharedConv2d, StrengthSchedule, soft_penalty
from psx.models.task_modules import add_task_modules
from psx.models.untie import untie_convs


def conv_layer(arm: str, in_channels: int, out_channels: int, size: tuple[int, int], k: int, stride: int,
               padding: int) -> nn.Module:
    if arm == "shared":
        return nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=padding)
    if arm == "soft":
        return SoftSharedConv2d(in_channels, out_channels, size, k, stride, padding)
    return LocallyConnected2d(in_channels, out_channels, size, k, stride, padding)


def strength_schedule(cfg: CNNConfig) -> StrengthSchedule:
    soft = cfg.soft
    return StrengthSchedule(soft.strength, soft.end, soft.epochs or 0, soft.schedule)


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, spec: DataSpec):
        super().__init__()
        if spec.kind != "images" or len(spec.input_shape) != 3:
            raise PsxError(f"model {cfg.name} needs images (channels, height, width); {spec.name} holds {spec.kind}")
        self.input_shape, self.untie_at, self.untie_patience = tuple(spec.input_shape), cfg.untie_at, cfg.untie_patience
        self.untied_at: int | None = None  # the epoch whose start untied the convs
        self.schedule = strength_schedule(cfg) if cfg.arm == "soft" else None
        self.strength = self.schedule.at(0) if self.schedule else 0.0
        self.penalty_in_optimizer = False  # set by the trainer where weight decay applies it exactly (psx.penalty_decay)
        # The trainer's hooks (regularizer, on_epoch_start) do something: psx.stacked must not train it.
        self.training_hooks = self.schedule is not None or self.untie_at is not None
        channels, height, width = spec.input_shape
        k, stride = cfg.kernel_size, cfg.stride
        padding = k // 2 if cfg.padding is None else cfg.padding
        if k > max(height, width):  # every filter would see mostly padding, at a cost of k*k weights each
            raise PsxError(f"model {cfg.name}: kernel_size={k} is larger than the {height}x{width} images of "
                           f"{spec.name}; use a kernel that fits the input")
        layers: list[nn.Module] = []
        self.positions: dict[str, int] = {}  # output positions of each conv layer, by its index in features
        for index, out_channels in enumerate(cfg.channels):
            out_h, out_w = (conv_output_size(s, k, stride, padding) for s in (height, width))
            if min(out_h, out_w) < 1:
                raise PsxError(
                    f"model {cfg.name}: conv layer {index + 1} (kernel {k}, padding {padding}) does not fit "
                    f"its {height}x{width} input from {spec.name}; use fewer or smaller layers"
                )
            self.positions[str(len(layers))] = out_h * out_w
            layers.append(conv_layer(cfg.arm, channels, out_channels, (height, width), k, stride, padding))
            layers.append(nn.ReLU())
            channels, height, width = out_channels, out_h, out_w
            if cfg.pool > 1:
                if min(height, width) < cfg.pool:
                    raise PsxError(
                        f"model {cfg.name}: pooling after conv layer {index + 1} gets a {height}x{width} map, "
                        f"smaller than pool={cfg.pool}; use fewer layers or model.pool=1"
                    )
                layers.append(nn.MaxPool2d(cfg.pool))
                height, width = height // cfg.pool, width // cfg.pool
        self.features = nn.Sequential(*layers)
        self.head = mlp_head(channels * height * width, list(cfg.hidden), spec.num_classes, cfg.dropout)
        linears = [f"head.{i}" for i, module in enumerate(self.head) if isinstance(module, nn.Linear)]
        # Adapters after each conv (over channels); LoRA on the head's hidden layers; each task its own classifier.
        add_task_modules(self, cfg.adapter, cfg.adapter_size, [f"features.{i}" for i in self.positions], linears[:-1],
                         torch.zeros(1, *self.input_shape), 1, linears[-1:])

    def forward(self, x):
        # Channels-last in both arms: PyTorch's CPU pooling and ReLU are several times faster in it
        # than in NCHW, oneDNN's conv is as fast, and LocallyConnected2d works in it natively.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).flatten(1))

    def parameter_reuse(self) -> dict[str, float]:
        """A conv's filter bank is applied at every output position: reuse count = positions. A soft
        layer's counts (its own parameter_reuse) make its unshared equivalent the locally connected twin."""
        reuse: dict[str, float] = {}
        for name, module in self.features.named_children():
            if isinstance(module, nn.Conv2d):
                positions = self.positions[name]
                reuse.update({f"features.{name}.weight": positions, f"features.{name}.bias": positions})
            elif isinstance(module, SoftSharedConv2d):
                reuse.update({f"features.{name}.{key}": times for key, times in module.parameter_reuse().items()})
        return reuse

    def regularizer(self) -> torch.Tensor | None:
        """The soft arm's strength x sum of its layers' mean_p ||D_p||^2; None when it adds nothing
        (strength 0, or the optimizer applies it as the offsets' weight decay)."""
        return self.strength * soft_penalty(self) if self.strength > 0 and not self.penalty_in_optimizer else None

    def penalty_decays(self) -> list[tuple[list[nn.Parameter], float]]:
        """Each soft layer's offsets with the weight decay that applies strength x its penalty."""
        return [(m.offset_parameters(), m.penalty_decay(self.strength))
                for m in self.features if isinstance(m, SoftSharedConv2d)]

    def on_epoch_start(self, epoch: int, stale: Sequence[int] = ()) -> bool:
        """The form for `epoch` (1-based): the soft arm's strength from its schedule; the shared arm's
        convs untied from `untie_epoch` on (True then: new parameters, so a new optimizer). `stale`:
        after each finished epoch, the validations since the best one (the trainer's patience count)."""
        if self.schedule is not None:
            self.strength = self.schedule.at(epoch - 1)
        at = self.untie_epoch(stale)
        if at is None or epoch < at or not self.is_shared():
            return False
        device = next(self.parameters()).device
        untie_convs(self, torch.zeros(1, *self.input_shape, device=device))
        self.untied_at = at
        return True

    def untie_epoch(self, stale: Sequence[int]) -> int | None:
        """untie_at, or with untie_at=plateau the epoch after the first `untie_patience` validations
        without improvement (None while there has been no such plateau). From the history alone, so a
        resumed run finds the same epoch."""
        if self.untie_at != "plateau":
            return self.untie_at
        return next((finished + 2 for finished, count in enumerate(stale) if count >= self.untie_patience), None)

    def is_shared(self) -> bool:
        return any(isinstance(m, nn.Conv2d) for m in self.features)

    def epoch_metrics(self) -> dict[str, float]:
        """Logged per epoch when sharing can change during the run: the sharing ratio, the strength."""
        metrics: dict[str, float] = {}
        if self.untie_at is not None:
            from psx.models import param_counts

            counts = param_counts(self)
            metrics["sharing/ratio"] = counts["params/unshared_equiv"] / counts["params/unique"]
            metrics["sharing/untied_at"] = self.untied_at or 0  # 0: still shared
        if self.schedule is not None:
            metrics["soft/strength"] = self.strength
        return metrics

