"""LeNet-style CNN; the unshared twin swaps every Conv2d for a LocallyConnected2d."""
from __future__ import annotations

import torch
from torch import nn

from psx.data.spec import DataSpec
from psx.errors import PsxError
from psx.models.families.cnn import CNNConfig
from psx.models.locally_connected import LocallyConnected2d, conv_output_size
from psx.models.mlp import mlp_head


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, spec: DataSpec):
        super().__init__()
        if spec.kind != "images" or len(spec.input_shape) != 3:
            raise PsxError(f"model {cfg.name} needs images (channels, height, width); {spec.name} holds {spec.kind}")
        channels, height, width = spec.input_shape
        k, stride = cfg.kernel_size, cfg.stride
        padding = k // 2 if cfg.padding is None else cfg.padding
        if k > max(height, width):  # every filter would see mostly padding, at a cost of k*k weights each
            raise PsxError(f"model {cfg.name}: kernel_size={k} is larger than the {height}x{width} images of "
                           f"{spec.name}; use a kernel that fits the input")
        layers: list[nn.Module] = []
        # A conv's filter bank is applied at every output position: reuse count = positions.
        self.reuse: dict[str, float] = {}
        for index, out_channels in enumerate(cfg.channels):
            out_h, out_w = (conv_output_size(s, k, stride, padding) for s in (height, width))
            if min(out_h, out_w) < 1:
                raise PsxError(
                    f"model {cfg.name}: conv layer {index + 1} (kernel {k}, padding {padding}) does not fit "
                    f"its {height}x{width} input from {spec.name}; use fewer or smaller layers"
                )
            if cfg.arm == "shared":
                self.reuse.update({f"features.{len(layers)}.weight": out_h * out_w, f"features.{len(layers)}.bias": out_h * out_w})
                layers.append(nn.Conv2d(channels, out_channels, k, stride=stride, padding=padding))
            else:
                layers.append(LocallyConnected2d(channels, out_channels, (height, width), k, stride, padding))
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

    def forward(self, x):
        # Channels-last in both arms: PyTorch's CPU pooling and ReLU are several times faster in it
        # than in NCHW, oneDNN's conv is as fast, and LocallyConnected2d works in it natively.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).flatten(1))

    def parameter_reuse(self) -> dict[str, float]:
        return self.reuse
