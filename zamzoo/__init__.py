"""zamzoo: lightweight attention modules (ZAM, ULSAM, NAM, SPEM and baselines) as a timm model zoo.

Importing zamzoo registers every model with timm: `timm.create_model('resnet18_zam')`, and every attention module
that installed packages declare in the entry-point group `zamzoo.attention` (zamzoo.models.plugins).
"""
from ._process import collections_paused

with collections_paused():  # the imports below bring in torch, torchvision and timm (zamzoo._process)
    from importlib.metadata import PackageNotFoundError, version

    from .layers import create_attn, list_attn
    from .models import list_models
    from .models.plugins import load_attention, load_entry_points, register_attention

    load_entry_points()

__all__ = ['create_attn', 'list_attn', 'list_models', 'register_attention', 'load_attention']
try:
    __version__ = version('zamzoo')  # the one version string is pyproject.toml's
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = '0+unknown'
