"""zamzoo's CIFAR backbones, every `<backbone>_<attention>` combination registered with timm on import.

    import timm, zamzoo
    model = timm.create_model('resnet18_zam')                    # 100 classes, 32x32 inputs
    model = timm.create_model('mobilenet_cbam', num_classes=10)

`BACKBONES` and `ATTENTIONS` are the two axes of the zoo table `ZOO` (name -> entry), for code that iterates them.
"""
from ._zoo import (ATTENTIONS, BACKBONES, TAGS, WEIGHTS_LICENSE, ZOO, SeedCount, backbone_recipe, hub_id, list_models,
                   pretrained_notes)
from ._base import ATTN_SLOTS, AttnFactory, CifarNet
# importing the family modules registers their models with timm
from .cifar_resnet import BasicBlock, Bottleneck, CifarResNet
from .cifar_mobilenet import CifarMobileNet, DepthwiseSeparable
from .cifar_mobilenetv2 import CifarMobileNetV2, InvertedResidual

__all__ = [
    'list_models', 'backbone_recipe', 'hub_id', 'pretrained_notes', 'BACKBONES', 'ATTENTIONS', 'ZOO', 'TAGS',
    'WEIGHTS_LICENSE',
    'ATTN_SLOTS', 'SeedCount',
    'CifarNet', 'CifarResNet', 'CifarMobileNet', 'CifarMobileNetV2',
    'BasicBlock', 'Bottleneck', 'DepthwiseSeparable', 'InvertedResidual', 'AttnFactory',
]
