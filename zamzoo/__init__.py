"""zamzoo: lightweight attention modules (ZAM, ULSAM, NAM, SPEM and baselines) as a timm model zoo.

Importing zamzoo registers every model with timm: `timm.create_model('resnet18_zam')`.
"""
from importlib.metadata import PackageNotFoundError, version

from .layers import create_attn, list_attn
from .models import list_models

__all__ = ['create_attn', 'list_attn', 'list_models']
try:
    __version__ = version('zamzoo')  # the one version string is pyproject.toml's
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = '0+unknown'
