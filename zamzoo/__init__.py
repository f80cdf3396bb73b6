"""zamzoo: lightweight attention modules (ZAM, ULSAM, NAM, SPEM and baselines) as a timm model zoo.

Importing zamzoo registers every model with timm: `timm.create_model('resnet18_zam')`.
"""
from .layers import create_attn, list_attn
from .models import list_models

__all__ = ['create_attn', 'list_attn', 'list_models']
__version__ = '0.1.0'
