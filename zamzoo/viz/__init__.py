"""Attention maps of a zamzoo model on one image, and a Grad-CAM-style class activation map.

The maps are read from the attention modules themselves: a forward pre-hook on every module that has
``attention_maps(x)`` (all of ``zamzoo.layers``) hands it the module's input during a normal forward pass, so
the maps are the gates the module applies there. ``attention_maps`` returns 'channel' (B, C, 1, 1) and/or
'spatial' (B, k, H, W) gates in [0, 1] (k = 1, or the g channel groups of ULSAM, whose maps each sum to 1);
element-wise gates (NAM, SimAM, BAM's sigmoid(Mc * Ms)) are averaged to those shapes, and modules with a residual
(ZAM+R, ULSAM, BAM) multiply by 1 + gate. Looking at the maps leaves BatchNorm statistics unchanged.

Grad-CAM (Selvaraju et al., arXiv:1610.02391): the gradient of the top class's logit (or a given class) with
respect to the last stage's output, averaged over H x W, weights that output's channels; ReLU; upsampled. It
gives a spatial picture for every model, also those whose attention has no spatial map (SE, ECA, SPEM, NAM,
ZCA, ZAM(+R) channel halves) or no attention at all (``*_plain``).

pytorch-grad-cam (jacobgil/pytorch-grad-cam) wants ``target_layers``: hand it the module that produces the last
feature map before the classifier's pool (:func:`gradcam_target_layer` returns it, and Grad-CAM here uses it):

=============================  ====================================  =====================================
backbone                       target layer                          map at a 32x32 input
=============================  ====================================  =====================================
resnet18, resnet34, resnet50   ``model.stages[-1][-1]`` (last block)  4x4 (512 / 512 / 2048 channels)
resnet164                      ``model.stages[-1][-1]`` (last block)  8x8 (256 channels)
mobilenet                      ``model.stages[-1][-1]`` (last block)  4x4 (1024 channels)
mobilenetv2                    ``model.final_conv`` (1x1 to 1280)     4x4 (1280 channels)
=============================  ====================================  =====================================

e.g. ``GradCAM(model=model, target_layers=[gradcam_target_layer(model)])``. For a block with attention, the
block's output is after its attention and residual add.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_path
from ..errors import NonFiniteError, NotFoundError, UsageError

__all__ = ['AttentionRecord', 'VizResult', 'load_image', 'collect_attention', 'grad_cam', 'gradcam_target_layer',
           'visualize', 'render', 'load_model', 'describe_transform']



@dataclass
class AttentionRecord:
    """The maps one attention module computed: channel weights (C,) and spatial maps (k, H, W), both in [0, 1]."""
    name: str                              # the module's dotted name in the model, e.g. 'stages.0.0.attn'
    kind: str                              # the module's `label` if it has one (e.g. 'ZAM(Max)', 'ZAM+R(Avg&Max)'),
    #                                        else its class name
    channel: Optional[np.ndarray] = None   # (C,)
    spatial: Optional[np.ndarray] = None   # (k, h, w) at the module's resolution


@dataclass
class VizResult:
    image: np.ndarray                      # (H, W, 3) in [0, 1]: the image as the model sees it, unnormalised
    records: List[AttentionRecord]
    cam: np.ndarray                        # (H, W) in [0, 1]
    class_index: int
    overlays: Dict[str, np.ndarray] = field(default_factory=dict)  # module name -> (H, W) in [0, 1]


def load_model(name: str, pretrained: bool = False, checkpoint: Optional[str] = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` after ``import zamzoo``; with `checkpoint` (a run folder, an export
    folder, a safetensors file, or a torch checkpoint read with ``weights_only=True``), the model `zamzoo eval`
    builds from it (the run's --model-kwargs, or the export's config.json; its classes), whose ``pretrained_cfg``
    then declares the preprocessing it is evaluated with (`eval_data_config`). ``local-dir:EXPORT`` names an
    export folder as timm does."""
    from ..train.build import create_model
    from ..train.evaluate import checkpoint_model, eval_data_config

    if pretrained and checkpoint:
        raise UsageError('give either --pretrained or --checkpoint, not both')
    if name.startswith(LOCAL_DIR) and not checkpoint:
        checkpoint = name[len(LOCAL_DIR):]
        name = _export_architecture(checkpoint)
    if not checkpoint:  # a download's failure (offline, not found) as one WeightsError
        return create_model(name, kwargs.pop('num_classes', None), pretrained=pretrained, **kwargs)
    if kwargs:
        raise UsageError(f'model kwargs {kwargs} with a checkpoint: its model is built as its run or export was')
    model, run_cfg = checkpoint_model(name, checkpoint)
    model.pretrained_cfg = {**model.pretrained_cfg, **eval_data_config(model, run_cfg)}
    return model


LOCAL_DIR = 'local-dir:'


def _export_architecture(folder: str) -> str:
    """The model name an export folder's config.json records."""
    from ..train.checkpoint import run_config

    architecture = run_config(folder).get('architecture')
    if not architecture:
        raise NotFoundError(f'{LOCAL_DIR}{folder}: no export config.json with an architecture there')
    return architecture


def load_image(path, model: nn.Module) -> Tuple[torch.Tensor, np.ndarray]:
    """The image at `path` through timm's eval transform for the model's pretrained_cfg
    (``create_transform(**resolve_data_config(model=model))``: the preprocessing the model is evaluated with, so
    the maps are those of its evaluation; the resize + centre crop may leave out the image's borders): returns the
    (1, 3, H, W) input and the image as the model sees it (H, W, 3) in [0, 1]."""
    from timm.data import create_transform, resolve_data_config
    from torchvision.transforms import Compose

    from ..data import open_rgb

    path = Path(path)
    if not path.exists():
        raise NotFoundError(f'image not found: {path}')
    if not path.is_file():
        raise UsageError(f'not an image file: {path} is a directory')
    image = open_rgb(path)  # 16-bit images rescaled to 8 bits; unreadable ones and decompression bombs: DataError
    *to_unit, normalize = create_transform(**resolve_data_config(model=model)).transforms
    unit = Compose(to_unit)(image)  # (3, H, W) in [0, 1]
    p = next(model.parameters())
    return normalize(unit).unsqueeze(0).to(device=p.device, dtype=p.dtype), unit.permute(1, 2, 0).contiguous().numpy()


def describe_transform(model: nn.Module) -> str:
    """One line naming the eval transform `load_image` applies, e.g. 'resize 54 bilinear, centre crop 48x48'."""
    from timm.data import resolve_data_config

    from ..data import eval_resize
    cfg = resolve_data_config(model=model)
    size = cfg['input_size'][-1]
    resize = eval_resize(size, cfg['crop_pct'])
    crop = f', centre crop {size}x{size}' if resize != size else f' ({size}x{size})'
    return f"resize {resize} {cfg['interpolation']}{crop}, mean {_rounded(cfg['mean'])} std {_rounded(cfg['std'])}"


def _rounded(values) -> str:
    return '(' + ', '.join(f'{v:.3f}' for v in values) + ')'


def attention_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every module with ``attention_maps``, outermost only (a CBAM, not its halves)."""
    found = []

    def walk(module, prefix):
        for child_name, child in module.named_children():
            name = f'{prefix}.{child_name}' if prefix else child_name
            if callable(getattr(child, 'attention_maps', None)):
                found.append((name, child))
            else:
                walk(child, name)

    walk(model, '')
    return found


@torch.no_grad()
def collect_attention(model: nn.Module, x: torch.Tensor) -> Tuple[List[AttentionRecord], torch.Tensor]:
    """Run `model` on `x` (batch 1) in eval mode; every attention module's maps on its actual input, and the logits."""
    records = []
    handles = []

    def hook_for(name, module):
        def pre_hook(mod, inputs):
            maps = mod.attention_maps(inputs[0])
            rec = AttentionRecord(name=name, kind=str(getattr(mod, 'label', type(mod).__name__)))
            if maps.get('channel') is not None:
                rec.channel = maps['channel'][0].flatten().float().cpu().numpy()
            if maps.get('spatial') is not None:
                rec.spatial = maps['spatial'][0].float().cpu().numpy()
            records.append(rec)
        return pre_hook

    for name, module in attention_modules(model):
        handles.append(module.register_forward_pre_hook(hook_for(name, module)))
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records, logits


def gradcam_target_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM uses: the backbone's final conv if it has one (mobilenetv2), else the
    last block of the last stage; for other timm models, the module of the last ``feature_info`` level."""
    final_conv = getattr(model, 'final_conv', None)
    if isinstance(final_conv, nn.Module) and not isinstance(final_conv, nn.Identity):
        return final_conv
    stages = getattr(model, 'stages', None)
    if isinstance(stages, nn.Sequential) and len(stages) and isinstance(stages[-1], nn.Sequential) and len(stages[-1]):
        return stages[-1][-1]
    info = getattr(model, 'feature_info', None)
    if info:
        return model.get_submodule(info[-1]['module'])
    raise UsageError(f'{type(model).__name__} has no stages or feature_info; pass the Grad-CAM target layer')


def grad_cam(model: nn.Module, x: torch.Tensor, class_index: Optional[int] = None,
             target_layer: Optional[nn.Module] = None) -> Tuple[np.ndarray, int]:
    """Grad-CAM over `target_layer` (default :func:`gradcam_target_layer`): (H, W) map in [0, 1] at the input's
    resolution, and the class it explains (the top-scoring one unless given)."""
    layer = target_layer if target_layer is not None else gradcam_target_layer(model)
    store = {}

    def fwd_hook(module, inputs, output):
        store['act'] = output
        output.register_hook(lambda g: store.__setitem__('grad', g))

    handle = layer.register_forward_hook(fwd_hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)  # a gradient path even for frozen weights
            logits = model(xg)
            if class_index is None:
                class_index = int(logits[0].argmax())
            if not 0 <= class_index < logits.shape[1]:
                raise UsageError(f'class index {class_index} out of range for {logits.shape[1]} classes')
            logits[0, class_index].backward()
    finally:
        handle.remove()
        model.train(was_training)
    model.zero_grad(set_to_none=True)
    act, grad = store['act'].detach(), store['grad'].detach()
    weights = grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam.float(), size=x.shape[-2:], mode='bilinear', align_corners=False)[0, 0]
    return _unit(cam.cpu().numpy()), class_index


def _unit(a: np.ndarray, constant: float = 0.0) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant map becomes `constant`."""
    a = np.nan_to_num(a.astype(np.float32))
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.full_like(a, constant)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def upsample_spatial(spatial: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A module's (k, h, w) spatial maps as one (H, W) map in [0, 1]: the mean over the k maps (ULSAM's groups),
    upsampled bilinearly, min-max scaled (ULSAM's softmax maps sum to 1, so their raw values are tiny); a uniform
    map (no position preferred) is drawn at 0.5."""
    t = torch.from_numpy(np.ascontiguousarray(spatial, dtype=np.float32)).mean(0, keepdim=True)[None]
    t = F.interpolate(t, size=size, mode='bilinear', align_corners=False)[0, 0]
    return _unit(t.numpy(), constant=0.5)


def visualize(model: nn.Module, image_path, out_png=None, class_index: Optional[int] = None,
              title: Optional[str] = None) -> VizResult:
    """Maps of every attention module of `model` on the image, plus Grad-CAM; writes a PNG if `out_png` is given."""
    if out_png is not None and Path(out_png).suffix.lower() != '.png':
        raise UsageError(f'--out must name a .png file, got {out_png}')
    x, rgb = load_image(image_path, model)
    records, logits = collect_attention(model, x)
    maps = [m for r in records for m in (r.channel, r.spatial) if m is not None]
    if not bool(torch.isfinite(logits).all()) or not all(np.isfinite(m).all() for m in maps):
        raise NonFiniteError(f"{image_path}: the model's outputs or attention maps hold NaN or infinity; its maps "
                             f"and Grad-CAM would mean nothing (are its weights finite?)")
    cam, cls = grad_cam(model, x, class_index)
    size = rgb.shape[:2]
    overlays = {r.name: upsample_spatial(r.spatial, size) for r in records if r.spatial is not None}
    result = VizResult(image=rgb, records=records, cam=cam, class_index=cls, overlays=overlays)
    if out_png is not None:
        render(result, out_png, title=title)
    return result


def render(result: VizResult, out_png, title: Optional[str] = None, max_spatial: int = 24) -> Path:
    """One PNG: the image, Grad-CAM, the spatial maps over the image (up to `max_spatial`, evenly chosen),
    and one strip of channel weights per module. Written atomically."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    spatial = [r for r in result.records if r.spatial is not None]
    if len(spatial) > max_spatial:
        idx = np.linspace(0, len(spatial) - 1, max_spatial).round().astype(int)
        spatial = [spatial[i] for i in sorted(set(idx))]
    channel = [r for r in result.records if r.channel is not None]

    panels = [('image', result.image, None), (f'Grad-CAM (class {result.class_index})', result.cam, 'jet')]
    panels += [(f'{r.name}\n{r.kind} spatial', result.overlays[r.name], 'jet') for r in spatial]
    ncols = min(6, len(panels))
    nrows = -(-len(panels) // ncols)
    strip_h = 0.0 if not channel else max(1.2, 0.14 * len(channel) + 0.8)
    fig = plt.figure(figsize=(max(2.2 * ncols, 8.0), 2.4 * nrows + strip_h + (0.4 if title else 0)), dpi=100)
    grid = fig.add_gridspec(nrows + (1 if channel else 0), ncols,
                            height_ratios=[2.4] * nrows + ([strip_h] if channel else []))
    for i, (label, data, cmap) in enumerate(panels):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        ax.imshow(result.image)
        if cmap is not None:
            ax.imshow(data, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
        ax.set_title(label, fontsize=7)
        ax.axis('off')
    if channel:
        ax = fig.add_subplot(grid[nrows, :])
        img = None
        for row, r in enumerate(channel):
            img = ax.imshow(r.channel[None, :], aspect='auto', cmap='viridis', vmin=0, vmax=1,
                            extent=(0, 1, row + 1, row), interpolation='nearest')
        ax.set_ylim(len(channel), 0)
        ax.set_xlim(0, 1)
        ax.set_yticks([i + 0.5 for i in range(len(channel))])
        ax.set_yticklabels([f'{r.name} ({r.kind}, C={r.channel.size})' for r in channel], fontsize=6)
        ax.set_xlabel('channel index / C', fontsize=7)
        ax.set_title('channel weights', fontsize=8)
        ax.tick_params(axis='x', labelsize=6)
        fig.colorbar(img, ax=ax, fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format='png', metadata={'Software': FIGURE_SOFTWARE})
    plt.close(fig)
    return out


FIGURE_SOFTWARE = 'zamzoo viz'  # the PNG's Software text: what `zamzoo viz --out` may overwrite


def is_viz_figure(path) -> bool:
    """Whether the file at `path` is a figure `zamzoo viz` wrote (a PNG whose Software text says so)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return image.format == 'PNG' and image.info.get('Software') == FIGURE_SOFTWARE
    except (OSError, UnidentifiedImageError):
        return False
