"""The name -> attention class table behind `create_attn`, `get_attn`, `list_attn`."""
from functools import partial
from typing import Callable, List, Optional, Union

from torch import nn

from ._checks import check_channels
from .bam import BAM
from .cbam import CBAM
from .nam import NAM
from .se_eca import ECA, SE
from .simam import SimAM
from .spem import SPEM
from .ulsam import ULSAM
from .zam import ZAM, ZCA, ZSA

__all__ = ['create_attn', 'get_attn', 'list_attn']

_ATTN = {
    'zam': ZAM,                          # ZAM(Avg&Max)
    'zam_avg': partial(ZAM, pool='avg'),
    'zam_max': partial(ZAM, pool='max'),
    'zamr': partial(ZAM, skip=True),     # ZAM+R
    'zca': ZCA,
    'zsa': ZSA,
    'ulsam': ULSAM,
    'nam': NAM,
    'spem': SPEM,
    'se': SE,
    'eca': ECA,
    'cbam': CBAM,                        # official; the ZAM seed's variant: CBAM(C, **CBAM_SEED_KWARGS)
    'bam': BAM,
    'simam': SimAM,
}
_NO_ATTN = ('', 'plain')


def list_attn() -> List[str]:
    """Sorted names of every attention module."""
    return sorted(_ATTN)


def get_attn(name: Union[str, Callable, None]) -> Optional[Callable[..., nn.Module]]:
    """The class (or functools.partial) registered under `name` (case-insensitive).

    None, '' and 'plain' mean no attention and return None; a class / callable is returned unchanged (timm style).
    Unknown name -> ValueError listing the valid names.
    """
    if name is None:
        return None
    if not isinstance(name, str):
        if callable(name):
            return name
        raise ValueError(f'attention must be a name, a module class or None, got {name!r}')
    key = name.lower()
    if key in _NO_ATTN:
        return None
    try:
        return _ATTN[key]
    except KeyError:
        raise ValueError(f'unknown attention {name!r}; valid names: {", ".join(list_attn())}') from None


def create_attn(name: Union[str, Callable], channels: int, **kwargs) -> Optional[nn.Module]:
    """``get_attn(name)(channels, **kwargs)``, e.g. ``create_attn('ulsam', 64, groups=8)``; None for 'plain'."""
    cls = get_attn(name)
    if cls is None:
        return None
    return cls(check_channels(channels, f'create_attn({name!r})'), **kwargs)
