"""zamzoo.layers: the attention modules, each ``Module(channels, <own kwargs>, act_layer=None, device=None,
dtype=None)`` so that it plugs into timm's models as ``attn_layer`` (ResNet-style blocks) or ``se_layer``
(EfficientNet / MobileNet blocks, which pass their ``act_layer``) and into ours by name. ``act_layer`` replaces the
internal activation of BAM (ReLU), CBAM's MLP and SE (timm's); None keeps the seed's. The modules with no activation
(ZAM, ZCA, ZSA, SimAM, SPEM, NAM, ECA) ignore it, and so does ULSAM (its ReLU is built into its fused inference
path). ZAM and ULSAM also take ``inplace`` (default False; timm's convention for activations): their eager inference
may then write the output into the input, as the zoo's blocks build them.

Common contract of every module:
- input (B, C, H, W) with C == channels, else ValueError naming the expected shape;
- ``attention_maps(x)`` -> dict of the maps the module computes on input x: 'channel' (B, C, 1, 1) and/or
  'spatial' (B, 1, H, W) (ULSAM: (B, g, H, W), one map per channel group); values in [0, 1] (element-wise gates
  such as NAM's and SimAM's are averaged to those shapes, see each class).

Names: `list_attn()` (the zoo table, zamzoo.models, says which of them its models use).
"""
from ._checks import check_input
from .bam import BAM
from .cbam import CBAM, CBAM_SEED_KWARGS, CbamSpatialAttn
from .nam import NAM
from .penalties import nam_l1_penalty, spem_penalty
from .registry import create_attn, get_attn, list_attn, register_attn, unregister_attn
from .se_eca import ECA, SE
from .simam import SimAM
from .spem import SPEM
from .ulsam import ULSAM
from .zam import ZAM, ZCA, ZSA

__all__ = [
    'ZAM', 'ZCA', 'ZSA', 'ULSAM', 'NAM', 'SPEM', 'SE', 'ECA', 'CBAM', 'CBAM_SEED_KWARGS', 'CbamSpatialAttn',
    'BAM', 'SimAM', 'create_attn', 'get_attn', 'list_attn', 'register_attn', 'unregister_attn', 'nam_l1_penalty',
    'spem_penalty', 'check_input',
]
