"""The name -> attention class table behind `create_attn`, `get_attn`, `list_attn`; `register_attn` adds a name at
run time (zamzoo.models.plugins calls it before adding the zoo table's row, so that layers never import models)."""
from functools import partial
from typing import Callable, List, Optional, Union

from torch import nn

from ..errors import UsageError
from ._checks import check_channels
from .bam import BAM
from .cbam import CBAM
from .nam import NAM
from .se_eca import ECA, SE
from .simam import SimAM
from .spem import SPEM
from .ulsam import ULSAM
from .zam import ZAM, ZCA, ZSA

__all__ = ['create_attn', 'get_attn', 'list_attn', 'register_attn', 'unregister_attn']

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


def _same_factory(a: Callable, b: Callable) -> bool:
    """Two factories build the same modules: the same class, bound (functools.partial) to the same arguments."""
    def parts(f):
        return (f.func, f.args, f.keywords) if isinstance(f, partial) else (f, (), {})
    return parts(a) == parts(b)


def register_attn(name: str, factory: Callable[..., nn.Module], *, check_only: bool = False) -> None:
    """Make `factory` (a class or functools.partial) the module of `name`: `create_attn(name, C)`,
    `attn_layer=name`. The same factory again is a no-op; another one under a taken name is a UsageError.
    `check_only`: raise as registering would, register nothing."""
    if name in _NO_ATTN or (name in _ATTN and not _same_factory(_ATTN[name], factory)):
        raise UsageError(f"attention name '{name}' is taken by {_ATTN.get(name, 'no attention')!r}; choose another")
    if not check_only:
        _ATTN[name] = factory


def unregister_attn(name: str) -> None:
    """Forget a name `register_attn` added."""
    del _ATTN[name]


def create_attn(name: Union[str, Callable], channels: int, **kwargs) -> Optional[nn.Module]:
    """``get_attn(name)(channels, **kwargs)``, e.g. ``create_attn('ulsam', 64, groups=8)``; None for 'plain'."""
    cls = get_attn(name)
    if cls is None:
        return None
    return cls(check_channels(channels, f'create_attn({name!r})'), **kwargs)
