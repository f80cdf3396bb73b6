"""NAM: Normalization-based Attention Module (Christian-lyc/NAM, arXiv:2111.12419).

Channel attention (the committed code): ``bn = BatchNorm2d(C, affine=True)``, ``w = |gamma| / sum|gamma|``,
``out = sigmoid(w_c * bn(F)_c) * F`` (an element-wise gate). Like the original, which reads ``bn.weight.data``, w is
computed from the *detached* gamma: no gradient flows through the normalised weights, gamma still learns through the
BN itself. The paper writes ``gamma_i / sum_j gamma_j`` (no absolute value) and implies a gradient through w; we
follow the code. Params 2C.

Pixel ("spatial") attention, only in the repository's first commit, enabled with ``spatial=True``: the (B, C, H, W)
map is viewed as (B, HW, C) and normalised by ``BatchNorm1d(H*W)`` (each pixel a feature), weighted by
``|lambda| / sum|lambda|`` over the HW positions (detached, as above), sigmoid, times its input. It runs after the
channel attention (CBAM order) and needs the input's spatial size at construction (``spatial_size=(H, W)`` or an
int): +2HW params, tied to that resolution.

Sparsity penalty: `nam_l1_penalty(model)` = sum of |gamma| (and |lambda|) over every NAM module; the recipe adds
``1e-4 *`` that to the loss (the original training script meant to and silently did not).

``impl='fused'`` (default) computes the channel attention with `zamzoo.layers.fused.nam_fused` in eager mode (a plain
affine nn.BatchNorm2d that no hook watches); ``impl='reference'`` always runs the plain formula, which is also what
every tracer, exporter and compiler records (the BatchNorm stays a module call there).
"""
from typing import Dict, Optional, Tuple, Union

import torch
import torch.fx
from torch import nn
from timm.layers import register_notrace_module

from ._checks import check_input, check_spatial_size, to_2tuple_int
from ._maps import keeps_running_stats
from .fused import FusedDispatch, check_impl, nam_fused, supports_fused_nam
from .fused._common import autocast_on, submodules_watched

torch.fx.wrap('check_input')
torch.fx.wrap('check_spatial_size')

__all__ = ['NAM']


@register_notrace_module  # timm's fx runs its eager path, bit for bit (why: tests/test_timm_fx_leaves.py)
class NAM(FusedDispatch, nn.Module):
    def __init__(
            self,
            channels: int,
            spatial: bool = False,
            spatial_size: Optional[Union[int, Tuple[int, int]]] = None,
            impl: str = 'fused',
            act_layer=None,  # timm's se_layer hook passes one: NAM has no activation
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.channels = int(channels)
        self.impl = check_impl(impl, 'NAM')
        self.bn = nn.BatchNorm2d(self.channels, affine=True, **dd)
        self.spatial = bool(spatial)
        if self.spatial:
            if spatial_size is None:
                raise ValueError(
                    'NAM(spatial=True) needs spatial_size=(H, W) of its input: the pixel attention has one '
                    'BatchNorm1d feature per position')
            self.spatial_size = to_2tuple_int(spatial_size, 'NAM spatial_size')
            self.spatial_bn = nn.BatchNorm1d(self.spatial_size[0] * self.spatial_size[1], affine=True, **dd)
        else:
            if spatial_size is not None:
                raise ValueError('NAM: spatial_size is only used with spatial=True')
            self.spatial_size = (0, 0)
            self.spatial_bn = None

    def extra_repr(self) -> str:
        s = f'{self.channels}'
        if self.spatial:
            s += f', spatial=True, spatial_size={self.spatial_size}'
        return s + f', impl={self.impl!r}'

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(w * BN(x)), element-wise (B, C, H, W); w from the detached BN scale."""
        y = self.bn(x)  # first: a pre-hook of the BN (torch.nn.utils.prune) may recompute its weight
        g = self.bn.weight.detach().abs()
        return torch.sigmoid(y * (g / g.sum()).view(1, -1, 1, 1))

    def _spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bn = self.spatial_bn
        assert bn is not None
        check_spatial_size(x, self.spatial_size[0], self.spatial_size[1], 'NAM(spatial=True)')
        t = bn(x.reshape(b, c, h * w).transpose(1, 2))  # (B, HW, C): one BN feature per pixel
        lam = bn.weight.detach().abs()
        t = t * (lam / lam.sum()).view(1, -1, 1)
        return torch.sigmoid(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, 'NAM')
        x = self._forward_impl(x)  # the channel attention
        if self.spatial_bn is not None:
            x = self._spatial_gate(x) * x
        return x

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_gate(x) * x

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        # not for e.g. a SyncBatchNorm after convert_sync_batchnorm, nor an empty batch (ATen's BatchNorm backward
        # refuses one; the module call returns an empty output), nor under autocast (its BatchNorm output is float32,
        # which the fused path, writing in x's dtype, would not give), nor where a hook watches the BN (the fused path
        # does not call it as a module)
        if not supports_fused_nam(self.bn) or x.numel() == 0 or autocast_on(x) or submodules_watched(self):
            return self._forward_reference(x)
        return nam_fused(x, self.bn)

    @keeps_running_stats
    def attention_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """NAM's gates are element-wise; returns them averaged to the usual shapes:
        'channel': the channel gate averaged over H x W, (B, C, 1, 1); with spatial=True also
        'spatial': the pixel gate (on the channel-refined map, as in forward) averaged over C, (B, 1, H, W)."""
        check_input(x, self.channels, 'NAM')
        mc = self.channel_gate(x)
        out = {'channel': mc.mean((2, 3), keepdim=True)}
        if self.spatial_bn is not None:
            out['spatial'] = self._spatial_gate(mc * x).mean(1, keepdim=True)
        return out

    def l1_penalty(self) -> torch.Tensor:
        """sum |gamma| of the channel BN (+ sum |lambda| of the pixel BN with spatial=True)."""
        p = self.bn.weight.abs().sum()
        if self.spatial_bn is not None:
            p = p + self.spatial_bn.weight.abs().sum()
        return p
