"""BAM: Bottleneck Attention Module (Park et al., arXiv:1807.06514), as the official code
(Jongchan/attention-module, MODELS/bam.py).

Placed once per stage (after layer1..3 of a ResNet), not per block.
- Channel Mc: GAP -> FC C->C/r -> BN1d -> ReLU -> FC C/r->C, shape (B, C, 1, 1).
- Spatial Ms: 1x1 C->C/r -> BN -> ReLU -> num_layers x [3x3 dilation d -> BN -> ReLU] -> 1x1 C/r->1, (B, 1, H, W).
- ``out = F * (1 + sigmoid(Mc * Ms))`` (the official code multiplies the two branches; the paper writes a sum);
  ``attention_maps`` averages that element-wise gate over H x W (channel) and over C (spatial).
All convs / linears with bias, initialised as the official ResNet initialises its BAMs (`BAM.init_weights`); ReLU,
or `act_layer` if given (timm's se_layer hook passes its block's). r = 16,
d = 4, 2 dilated convs: ``3Cm + 18m^2 + 13m + C + 1`` params with m = C // 16
(C=64,128,256: 1,173 + 4,457 + 17,361 = 22,991, the official CIFAR-100 ResNet18 + BAM minus the plain one).
The channel branch's BatchNorm1d cannot train on a batch of 1, as in the original: it is refused with a
ValueError naming BAM. GAP is the mean of the whole
map, computed as the official code computes it on square maps, ``avg_pool2d`` of the whole map (its numbers bit
for bit, outputs and gradients; ``x.mean`` sums in another order), where the official ``avg_pool2d(x, H,
stride=H)`` is the whole map on square maps only (on an H x W map with W > H it averages the first H x H window,
with W < H it raises).
"""
from typing import Dict

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import create_act_layer
from torch import nn

from ._checks import check_input, check_trainable_batch
from ._maps import keeps_running_stats
from .fused._common import recording_graph

torch.fx.wrap('check_input')
torch.fx.wrap('check_trainable_batch')

__all__ = ['BAM']


class BAM(nn.Module):
    def __init__(
            self,
            channels: int,
            reduction: int = 16,
            dilation: int = 4,
            num_layers: int = 2,
            act_layer=None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.channels = int(channels)
        mid = max(1, self.channels // int(reduction))
        act = act_layer or nn.ReLU
        # channel branch
        self.fc1 = nn.Linear(self.channels, mid, **dd)
        self.bn1 = nn.BatchNorm1d(mid, **dd)
        self.act1 = create_act_layer(act, inplace=True)
        self.fc2 = nn.Linear(mid, self.channels, **dd)
        # spatial branch
        layers = [nn.Conv2d(self.channels, mid, 1, **dd), nn.BatchNorm2d(mid, **dd),
                  create_act_layer(act, inplace=True)]
        for _ in range(num_layers):
            layers += [
                nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, **dd),
                nn.BatchNorm2d(mid, **dd),
                create_act_layer(act, inplace=True),
            ]
        layers.append(nn.Conv2d(mid, 1, 1, **dd))
        self.spatial = nn.Sequential(*layers)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official code's init (Jongchan/attention-module MODELS/model_resnet.py, ResidualNet.__init__: its loop
        over the state_dict keys reaches the BAMs too): every bias 0, the spatial branch's convs kaiming normal
        (fan_out); the linears keep PyTorch's default, the BNs weight 1 and bias 0 (the loop's values, the
        default)."""
        for m in (self.fc1, self.fc2, *self.spatial):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return f'{self.channels}'

    def channel_logits(self, x: torch.Tensor) -> torch.Tensor:
        check_trainable_batch(x, self.training, 'BAM')
        y = self.fc2(self.act1(self.bn1(self.fc1(_global_mean(x)))))
        return y.view(y.shape[0], y.shape[1], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'BAM')
        return x * (1.0 + self.gate(x))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The element-wise gate sigmoid(Mc * Ms), (B, C, H, W); the module multiplies its input by 1 + gate."""
        return torch.sigmoid(self.channel_logits(x) * self.spatial(x))

    @keeps_running_stats
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """BAM's gate sigmoid(Mc * Ms) is element-wise (applied as 1 + gate); returns it averaged to the usual shapes,
        as NAM's: {'channel': its mean over H x W (B, C, 1, 1), 'spatial': its mean over C (B, 1, H, W)}. (Not the
        branches sigmoid(Mc), sigmoid(Ms) alone: where Mc < 0 the applied gate is highest where Ms is lowest.)"""
        check_input(x, self.channels, 'BAM')
        gate = self.gate(x)
        return {'channel': gate.mean((2, 3), keepdim=True), 'spatial': gate.mean(1, keepdim=True)}


def _global_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of each map, (B, C), as the official code's ``avg_pool2d`` of the whole map computes it, in eager
    mode, TorchScript and torch.fx (which record the map's size); ``x.mean`` (the same up to rounding) where the size
    would be baked in or a compiler fuses (`recording_graph`)."""
    if torch.jit.is_scripting() or not recording_graph():
        return F.avg_pool2d(x, x.shape[2:]).flatten(1)
    return x.mean((2, 3))
