"""SE and ECA: timm's `SEModule` / `EcaModule`, with zamzoo's input check and `attention_maps`.

- SE (Hu et al., arXiv:1709.01507): GAP -> FC C->C/16 -> ReLU -> FC -> sigmoid -> scale. timm's SEModule with
  rd_ratio 1/16 and, unlike timm's default (rd_divisor=8), the paper's reduction ``C // 16`` (floor, at least 1)
  unless ``rd_divisor`` is given (then timm's ``make_divisible(C * rd_ratio, rd_divisor)``, as SEModule).
- ECA (Wang et al., arXiv:1910.03151): timm's EcaModule, kernel size adaptive to C as in the paper
  (k = |log2(C)/2 + 1/2|, odd, at least 3) unless ``kernel_size`` is given: then exactly that k (the official
  ECA-Net models fix it: 3 in eca_resnet, 1 or 3 in eca_mobilenet_v2), which timm's EcaModule would recompute.
The forward is restated (TorchScript compiles no ``super().forward``) with the same operations as timm's.
"""
from typing import Dict, Optional

import torch
import torch.fx
from timm.layers import EcaModule, SEModule, make_divisible

from ._checks import check_channels, check_input, positive_int
from .fused._common import exporting_onnx

torch.fx.wrap('check_input')

__all__ = ['SE', 'ECA', 'reduced_channels']


def reduced_channels(channels: int, rd_ratio: float, rd_channels: Optional[int] = None,
                     rd_divisor: Optional[int] = None) -> int:
    """The hidden width: ``rd_channels`` if given (a positive int), else with ``rd_divisor`` timm's SEModule's
    ``make_divisible(channels * rd_ratio, rd_divisor)``, else the original papers' ``max(1, floor(channels *
    rd_ratio))`` (``C // 16`` for rd_ratio 1/16)."""
    if rd_channels is not None:
        return positive_int(rd_channels, 'rd_channels', ' (or None: from rd_ratio)')
    if rd_divisor is not None:
        return make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.)
    return max(1, int(channels * rd_ratio + 1e-9))


class _ChannelGate:
    """forward / attention_maps shared by SE and ECA; subclasses define channel_gate and set `label`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, self.label)
        return x * self.channel_gate(x)

    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{'channel': (B, C, 1, 1)}."""
        check_input(x, self.channels, self.label)
        return {'channel': self.channel_gate(x)}


class SE(_ChannelGate, SEModule):
    """timm's SEModule with the paper's C // 16 unless rd_divisor is given (`reduced_channels`); other keyword
    arguments go to SEModule unchanged."""

    def __init__(self, channels: int, rd_ratio: float = 1. / 16, rd_channels: Optional[int] = None,
                 rd_divisor: Optional[int] = None, device=None, dtype=None, **kwargs):
        channels = check_channels(channels, 'SE')
        super().__init__(channels, rd_channels=reduced_channels(channels, rd_ratio, rd_channels, rd_divisor),
                         device=device, dtype=dtype, **kwargs)
        self.channels = int(channels)
        self.label = 'SE'

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return self.gate(x_se)


class ECA(_ChannelGate, EcaModule):
    """timm's EcaModule: kernel size adaptive to C (from gamma, beta) when kernel_size is None, else exactly
    kernel_size; other keyword arguments go to EcaModule."""

    def __init__(self, channels: int, kernel_size: Optional[int] = None, device=None, dtype=None, **kwargs):
        channels = check_channels(channels, 'ECA')  # before EcaModule's log2(channels)
        if kernel_size is None:
            super().__init__(channels, device=device, dtype=dtype, **kwargs)
        else:
            if positive_int(kernel_size, 'ECA: kernel_size', ' (or None: adaptive)') % 2 != 1:
                raise ValueError(f'ECA: kernel_size must be odd (or None: adaptive), got {kernel_size!r}')
            if kwargs.get('use_mlp'):
                raise ValueError("ECA: kernel_size cannot be fixed with use_mlp "
                                 "(timm's EcaModule derives it from channels)")
            # without channels, EcaModule keeps kernel_size instead of recomputing it (its use_mlp needs channels)
            super().__init__(None, kernel_size=int(kernel_size), device=device, dtype=dtype, **kwargs)
        self.channels = int(channels)
        self.label = 'ECA'

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 1, C) for the 1d conv as the official code makes it, a transposed view: the conv's input gradient is then
        # the official one bit for bit (from a contiguous (B, 1, C) it was 1.2e-7 off), and at batch 1 its output too
        # (the conv takes another path). torch.jit.trace replays the view; a compiler would guard the batch on its
        # strides (torch.export: batch <= 2), so it gets a contiguous one, as the ONNX exporters do
        if not torch.jit.is_scripting() and (torch.compiler.is_compiling() or exporting_onnx()):
            y = self.conv(x.mean((2, 3)).unsqueeze(1))  # no view(B, 1, -1): B may be 0
        else:
            y = self.conv(x.mean((2, 3), keepdim=True).squeeze(-1).transpose(-1, -2))
        if self.conv2 is not None:
            y = self.act(y)
            y = self.conv2(y)
        return self.gate(y.transpose(-1, -2).unsqueeze(-1))
