"""`zamzoo quickstart`: the whole factory on a CPU in about two minutes, offline, on a data set made on the fly.

The same library calls a maintainer makes to publish weights, on coloured shapes instead of CIFAR-100:

1. `zamzoo.data.shapes.write_shapes`: 10 classes of 32x32 shapes written as an image folder (train/ and val/);
2. `zamzoo.train.train`: the training loop on that folder (progress bar, metrics.jsonl, curves.png,
   checkpoint.pt, model.safetensors, results.json);
3. `zamzoo.publish.export_run` and `validate_export` (the checks `zamzoo push` runs before uploading), then
   `zamzoo.publish.hubcache.cache_export` lays the export out in a local Hugging Face cache as a download would,
   and `timm.create_model('hf-hub:<repo>', pretrained=True)` loads it through huggingface_hub in offline mode;
   the reloaded model's predictions on the held-out split must equal the trained model's;
4. `zamzoo.viz.visualize`: attention maps of the reloaded model on a few held-out images (PNG).

    from zamzoo.quickstart import QuickstartConfig, quickstart
    result = quickstart(QuickstartConfig(out='quickstart-out'))
    print(result.top1, result.paths['attention'])
"""
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import timm
import torch

from .._io import write_json_atomic
from .._paths import check_writable
from ..data import DataLoaderBatches, folder_transforms, image_folder
from ..data.shapes import CLASSES as SHAPES, write_shapes
from ..errors import UsageError, ZamzooError
from ..publish import export_run, validate_export
from ..publish.hubcache import cache_export, offline_hub
from ..models import ZOO
from ..recipes import MIN_TRAIN_IMAGES, get_recipe
from ..train import (CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE, RESULTS_FILE, WEIGHTS_FILE, TrainConfig,
                     create_model, load_weights, train)
from ..train.build import check_model_name
from ..train.config import check_seed
from ..train.distributed import resolve_device
from ..viz import visualize

DEFAULT_MODEL = 'mobilenet_zam'
DEFAULT_OUT = 'quickstart-out'
REPO_ORG = 'local'  # the export is made for `local/<model>.<tag>`: a repo that exists only in the local cache
SUMMARY_FILE = 'summary.json'
CHANNELS_LAST = True  # MobileNet trains ~30% faster on a CPU in channels_last; the comparison uses it too


@dataclass
class QuickstartConfig:
    """Sizes are the defaults of `zamzoo quickstart`, chosen to finish within two minutes on a 2-core CPU."""
    out: str = DEFAULT_OUT
    model: str = DEFAULT_MODEL
    train_images: int = 2000
    val_images: int = 500
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.02
    seed: int = 0
    attention_images: int = 3
    device: Optional[str] = None  # default: cuda if available, else cpu

    def validate(self):
        for name in ('train_images', 'val_images', 'epochs', 'batch_size', 'attention_images'):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UsageError(f'{name}: expected a positive integer, got {v!r}')
        if not self.lr > 0:
            raise UsageError(f'lr: expected a positive number, got {self.lr!r}')
        if min(self.train_images, self.val_images) < len(SHAPES):
            raise UsageError(f'train_images and val_images: expected at least {len(SHAPES)} each (one image per '
                             f'class), got {self.train_images} and {self.val_images}')
        if self.batch_size < MIN_TRAIN_IMAGES:
            raise UsageError(f'batch_size: expected at least {MIN_TRAIN_IMAGES} (BatchNorm trains on no fewer), got '
                             f'{self.batch_size}')
        if self.attention_images > len(SHAPES):
            raise UsageError(f'attention_images: expected at most {len(SHAPES)} (one image of each class), got '
                             f'{self.attention_images}')
        check_seed(self.seed)
        resolve_device(self.device)  # an unknown or absent device, before the data set is written
        check_model_name(self.model)
        if self.model not in ZOO:  # the export (step 3) takes zoo models only: say so before training
            raise UsageError(f"'{self.model}' is not a zamzoo model; quickstart trains and exports a zoo model "
                             f'(`zamzoo list`)')
        return self


@dataclass
class QuickstartResult:
    model: str
    repo_id: str                 # the Hub repo name the export was made for (here: only in the local cache)
    top1: float                  # accuracy (%) of the reloaded model on the held-out split
    chance: float                # 100 / number of classes
    run_top1: float              # the training loop's own final test top-1 (%)
    max_logit_diff: float
    val_images: int
    train_wall_s: float
    wall_s: float
    paths: Dict[str, str] = field(default_factory=dict)
    attention: List[str] = field(default_factory=list)


def _predict(model, loader):
    """Logits and targets of `model` over `loader` (eval mode, CPU)."""
    model.eval()
    logits, targets = [], []
    with torch.inference_mode():
        for x, y, _ in loader:
            logits.append(model(x))
            targets.append(y)
    return torch.cat(logits), torch.cat(targets)


def _new_folder(path) -> Path:
    out = Path(path).expanduser()
    if out.exists():
        raise ZamzooError(f'{out} already exists; remove it (e.g. `rm -r {out}`) or pass another --out')
    check_writable(out, '--out')
    return out


def _reload(run: Path, export: Path, cache: Path, repo_id: str):
    """Export the run, check it as `zamzoo push` would, lay it out in the Hugging Face cache `cache` and load it
    back through timm + huggingface_hub offline. Returns (the reloaded model, the snapshot folder)."""

    export_run([run], export, repo_id=repo_id)
    validate_export(export)  # what `zamzoo push` checks before uploading anything
    snapshot = cache_export(export, cache)
    with offline_hub(cache):
        loaded = timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    if (loaded.pretrained_cfg.get('source'), loaded.pretrained_cfg.get('hf_hub_id')) != ('hf-hub', repo_id):
        raise ZamzooError(f'the reloaded model did not come from hf-hub:{repo_id}: {loaded.pretrained_cfg}')
    return loaded, snapshot


def eval_transform(cfg: dict, recipe: str):
    """The training loop's evaluation transform with what the export's Hub config declares: normalisation, input
    size and crop (the run's loader's: the tensor loader evaluates uncropped)."""
    return folder_transforms(get_recipe(recipe), cfg['mean'], cfg['std'], cfg['input_size'][-1], train=False,
                             crop_pct=cfg['crop_pct'])


def _compare(loaded, run: Path, results: dict, val, batch_size: int):
    """(reloaded model's logits, trained model's logits, targets) on the held-out images `val`, with the training
    loop's evaluation on the CPU (same batch size and memory format, hence the same numbers)."""

    trained = create_model(results['model'], num_classes=results['num_classes'])
    trained.load_state_dict(load_weights(run))
    transform = eval_transform(loaded.pretrained_cfg, results['recipe'])
    loader = DataLoaderBatches(val, batch_size, transform, train=False, channels_last=CHANNELS_LAST)
    loaded_logits, targets = _predict(loaded.to(memory_format=torch.channels_last), loader)
    trained_logits, _ = _predict(trained.to(memory_format=torch.channels_last), loader)
    return loaded_logits, trained_logits, targets


def _draw_attention(model, val, n: int, folder: Path, title: str) -> List[str]:
    """Attention maps of `model` on the first held-out image of each of the first `n` classes of `val`, one PNG
    each in `folder`; returns their paths."""
    chosen = {}
    for path, label in val.samples:
        chosen.setdefault(label, Path(path))
        if len(chosen) == n:
            break
    pngs = []
    for image in (chosen[k] for k in sorted(chosen)):
        png = folder / f'{image.parent.name}_{image.stem}.png'
        visualize(model, image, png, title=f'{title} on {image.parent.name}')
        pngs.append(str(png))
    return pngs


def quickstart(config: QuickstartConfig = None, reporter=None, log: Optional[Callable[[str], None]] = None,
               **kwargs) -> QuickstartResult:
    """Run the quickstart into `config.out` (which must not exist yet); see the module doc. `kwargs` are
    QuickstartConfig fields when no config is given. `reporter` is the training loop's (zamzoo.train.Reporter);
    `log(message)` is called at the start of each step."""

    config = (config or QuickstartConfig(**kwargs)).validate()
    out = _new_folder(config.out)
    try:
        return _quickstart_into(out, config, reporter, log or (lambda message: None))
    except BaseException:  # a failed or interrupted quickstart leaves nothing that would block the next one
        shutil.rmtree(out, ignore_errors=True)
        raise


def _quickstart_into(out: Path, config: QuickstartConfig, reporter, log: Callable[[str], None]) -> QuickstartResult:
    t0 = time.perf_counter()
    data, run, export, cache, attention_dir = (out / 'data' / 'shapes', out / 'run', out / 'export',
                                               out / 'hf-cache', out / 'attention')

    log(f'[1/5] writing the shapes data set ({config.train_images} train / {config.val_images} val images) to {data}')
    write_shapes(data, config.train_images, config.val_images, seed=config.seed)

    log(f'[2/5] training {config.model} on it ({config.epochs} epoch{"s" if config.epochs > 1 else ""})')
    t_train = time.perf_counter()
    train_config = TrainConfig(model=config.model, data=str(data), dataset='folder', epochs=config.epochs,
                               batch_size=config.batch_size, lr=config.lr, seed=config.seed, out=str(run),
                               device=config.device, channels_last=CHANNELS_LAST)
    results = train(train_config, reporter=reporter)
    train_wall = time.perf_counter() - t_train

    log(f'[3/5] exporting to {export}, laying it out in the Hugging Face cache {cache}, reloading it offline')
    repo_id = f'{REPO_ORG}/{config.model}.{data.name}'
    loaded, snapshot = _reload(run, export, cache, repo_id)

    log('[4/5] comparing the reloaded model with the trained one on the held-out images')
    val = image_folder(data, 'val')
    loaded_logits, trained_logits, targets = _compare(loaded, run, results, val, train_config.eval_batch_size)
    if not torch.equal(loaded_logits.argmax(1), trained_logits.argmax(1)):
        raise ZamzooError('the model reloaded through the Hugging Face cache predicts differently from the trained '
                          'model: the export or the load changed the weights')

    log(f'[5/5] drawing attention maps of {config.attention_images} held-out images to {attention_dir}')
    pngs = _draw_attention(loaded, val, config.attention_images, attention_dir,
                           f'{config.model} (reloaded from {repo_id})')

    result = QuickstartResult(
        model=config.model, repo_id=repo_id, top1=100.0 * (loaded_logits.argmax(1) == targets).double().mean().item(),
        chance=100.0 / results['num_classes'], run_top1=results['top1'],
        max_logit_diff=(loaded_logits - trained_logits).abs().max().item(), val_images=len(targets),
        train_wall_s=train_wall, wall_s=time.perf_counter() - t0,
        paths=dict(out=str(out), data=str(data), run=str(run), metrics=str(run / METRICS_FILE),
                   curves=str(run / CURVES_FILE), checkpoint=str(run / CHECKPOINT_FILE),
                   weights=str(run / WEIGHTS_FILE), results=str(run / RESULTS_FILE), export=str(export),
                   hf_cache=str(cache), snapshot=str(snapshot), attention=str(attention_dir),
                   summary=str(out / SUMMARY_FILE)),
        attention=pngs,
    )
    write_json_atomic(out / SUMMARY_FILE, dict(asdict(result), config=asdict(config)))
    return result


# ---------------------------------------------------------------------------------------------------------------
# CLI
