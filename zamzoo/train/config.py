"""What one training run is: `TrainConfig` (the Python API's argument, the CLI's flags) and its resolution into a
recipe, a device and the loaders' settings."""
import os
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

from ..data.sources import DATASETS, DataSource, check_dataset
from ..dataset_table import CIFAR_DATASETS, DEFAULT_DATASET, OWN_DATASETS
from ..errors import UsageError
from ..recipes import Recipe, get_recipe, list_recipes
from .build import check_model_kwargs, check_model_name

AMP_CHOICES = ('auto', 'bf16', 'fp16', 'none')
LOADER_CHOICES = ('auto', 'tensor', 'dataloader')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')  # torch.compile's
GRAPHING_COMPILE_MODES = ('reduce-overhead', 'max-autotune')  # the ones that capture CUDA graphs themselves
DATASET_CHOICES = DATASETS  # owned by zamzoo.data.sources
MAX_SEED = 2 ** 32 - 1


def check_seed(seed) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f'seed: expected an integer from 0 to {MAX_SEED} (2**32 - 1, the range numpy seeds from), '
                         f'got {seed!r}')
MAX_IMG_SIZE = 4096  # timm's largest pretrained inputs are about 1024


def check_graph_compile_mode(compile: bool, compile_mode: Optional[str]):
    """--cuda-graph with --compile: refused (UsageError) for the compile modes that make CUDA graphs themselves."""
    if compile and compile_mode in GRAPHING_COMPILE_MODES:
        raise UsageError(f'cuda_graph: --compile-mode {compile_mode} makes CUDA graphs of its own; use '
                         f'--cuda-graph with --compile-mode default or max-autotune-no-cudagraphs, or alone')


@dataclass
class TrainConfig:
    """One training run. `None` fields take the recipe's value (epochs, batch_size, lr) or an automatic choice.

    model: a timm model name (zamzoo's are registered by `import zamzoo`); data: the data folder (for CIFAR the
    folder holding cifar-100-python/ or cifar-10-batches-py/; for `folder`, one with train/ and val/, or one of
    class sub-folders with `holdout`; for `hf`, a Hugging Face dataset: Hub name, save_to_disk or parquet folder).
    init: weights to start from (zoo name, hf-hub:org/name, local-dir:PATH, export or run folder, .safetensors).
    batch_size is the global batch: with N processes each takes batch_size / N of every step.
    """
    model: str
    data: Optional[str] = None
    dataset: str = DEFAULT_DATASET
    recipe: Union[str, Recipe, None] = None     # default: the model's own recipe (its cfg's), finetune for folders
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    seed: int = 0
    out: Optional[str] = None                   # run folder; default runs/<model>-<dataset>-<recipe>-s<seed>
    resume: bool = False
    pretrained: bool = False
    compile: bool = False
    compile_mode: Optional[str] = None          # torch.compile mode: None/'default', 'reduce-overhead', 'max-autotune'
    cuda_graph: bool = False                    # replay the whole step as a CUDA graph (zamzoo.train.step)
    amp: str = 'auto'                           # bf16 on CUDA, none on CPU
    device: Optional[str] = None                # 'cuda', 'cpu', 'cuda:1'; default cuda if available
    loader: str = 'auto'                        # 'tensor' (device-resident) on CUDA if it fits, else 'dataloader'
    workers: Optional[int] = None               # DataLoader workers (0 on CPU, up to 8 per process on CUDA)
    download: bool = False                      # fetch CIFAR with torchvision's own download
    channels_last: Optional[bool] = None        # default: on CUDA
    img_size: Optional[int] = None              # folder / hf: default the model's input size (CIFAR: 32)
    model_kwargs: dict = field(default_factory=dict)
    eval_batch_size: int = 500
    eval_every: int = 1                         # evaluate on the test split every N epochs (and after the last)
    progress_every: int = 25                    # steps between progress updates (no host sync: values lag)
    image_column: Optional[str] = None          # hf: default img / image / the only Image feature
    label_column: Optional[str] = None          # hf: default fine_label / label / the only ClassLabel feature
    train_split: Optional[str] = None           # hf: default 'train'
    val_split: Optional[str] = None             # hf: default validation / val / valid / test
    holdout: Optional[float] = None             # folder / hf without a validation split: the share held out
    init: Optional[str] = None                  # starting weights (see zamzoo.train.init)
    max_bad_steps: int = 0                      # steps with a NaN/inf loss skipped in an epoch before the run fails
    attn: Optional[str] = None                  # attention module to import and register first: 'pkg.module:Class'
    attn_name: Optional[str] = None             # or 'path/to/file.py:Class', under this name (default: class name)
    attn_options: dict = field(default_factory=dict)  # bound to it, as zamzoo.register_attention binds them

    def validate(self):
        if not isinstance(self.model, str) or not self.model:
            raise UsageError('model: expected a model name, e.g. resnet18_zam (see `zamzoo list`)')
        check_dataset(self.dataset)
        if self.data is None:
            raise UsageError('data: expected the data folder (--data DIR)')
        if isinstance(self.recipe, str) and self.recipe not in list_recipes():
            raise UsageError(f"recipe: unknown '{self.recipe}'; expected one of {list_recipes()}")
        for name in ('eval_batch_size', 'eval_every', 'progress_every'):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UsageError(f'{name}: expected a positive integer, got {v!r}')
        for name, choices in (('amp', AMP_CHOICES), ('loader', LOADER_CHOICES)):
            if getattr(self, name) not in choices:
                raise UsageError(f"{name}: unknown '{getattr(self, name)}'; expected one of {list(choices)}")
        self._validate_source()
        # recorded in the run's identity, it did nothing; a run started so before this check still resumes
        if self.compile_mode is not None and not self.compile and not self.resume:
            raise UsageError(f'compile_mode: --compile-mode {self.compile_mode} is a mode of torch.compile; add '
                             f'--compile, or drop it')
        if self.cuda_graph:
            check_graph_compile_mode(self.compile, self.compile_mode)
        if self.download and self.dataset not in CIFAR_DATASETS:
            raise UsageError(f"download: only CIFAR can be downloaded (--dataset {' or '.join(CIFAR_DATASETS)})")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f'workers: expected >= 0, got {self.workers}')
        if self.img_size is not None and not 8 <= self.img_size <= MAX_IMG_SIZE:
            raise UsageError(f'img_size: expected 8 to {MAX_IMG_SIZE} pixels, got {self.img_size}')
        if self.img_size not in (None, 32) and self.dataset not in OWN_DATASETS:
            raise UsageError(f'img_size: only for --dataset folder or hf (CIFAR images are 32x32 and are trained as '
                             f'they are), got {self.img_size}')
        if not isinstance(self.max_bad_steps, int) or isinstance(self.max_bad_steps, bool) or self.max_bad_steps < 0:
            raise UsageError(f'max_bad_steps: expected an integer >= 0, got {self.max_bad_steps!r}')
        check_seed(self.seed)
        self._load_attention()
        check_model_name(self.model)
        self.resolve_recipe()  # the recipe checks its fields, --epochs, --batch-size and --lr among them
        if self.model_kwargs:
            size = self.img_size if self.dataset in OWN_DATASETS else 32  # None: the model's own
            check_model_kwargs(self.model, self.model_kwargs, size, self.pretrained)
        return self

    def _load_attention(self):
        """Register the attention module the model needs (in every process that trains it: CLI, zoo workers); a file
        spec becomes absolute, so that a worker started elsewhere finds the file."""
        if self.attn is None:
            if self.attn_name is not None or self.attn_options:
                raise UsageError('attn_name, attn_options: name the module given by --attn SPEC and its options; '
                                 'pass --attn too')
            return
        if not isinstance(self.attn_options, dict):
            raise UsageError(f'attn_options: expected a dict of the options bound to the module, got '
                             f'{self.attn_options!r}')
        from ..models.plugins import load_attention
        self.attn = load_attention(self.attn, self.attn_name, self.attn_options).spec

    def _validate_source(self):
        hf_only = [k for k in ('image_column', 'label_column', 'train_split', 'val_split') if getattr(self, k)]
        if hf_only and self.dataset != 'hf':
            raise UsageError(f"{hf_only[0]}: only for --dataset hf")
        if self.holdout is not None:
            if self.dataset not in OWN_DATASETS:
                raise UsageError('holdout: only for --dataset folder or hf (CIFAR has its own test split)')
            from ..data.split import check_fraction
            check_fraction(self.holdout)
        if self.init is not None and self.pretrained:
            raise UsageError('init: --pretrained and --init both set the starting weights; pass one')

    def source(self, split: Optional[dict] = None) -> DataSource:
        """Where the images come from (`split`: a split file's content to reuse)."""
        return DataSource(self.dataset, self.data, self.download, self.image_column, self.label_column,
                          self.train_split, self.val_split, self.holdout, self.seed, split)

    def resolve_recipe(self) -> Recipe:
        """The recipe with this run's overrides (epochs, batch size, lr) applied."""
        base = self.recipe if isinstance(self.recipe, Recipe) else get_recipe(
            self.recipe or default_recipe(self.model, self.dataset))
        changes = {k: v for k, v in (('epochs', self.epochs), ('batch_size', self.batch_size), ('lr', self.lr))
                   if v is not None and v != getattr(base, k)}
        return base.replace(**changes) if changes else base

    def default_out(self, recipe: Recipe) -> str:
        return os.path.join('runs', f'{self.model}-{self.dataset}-{recipe.name}-s{self.seed}')

    def to_dict(self) -> dict:
        d = asdict(self)
        if isinstance(self.recipe, Recipe):
            d['recipe'] = self.recipe.name
        if not self.cuda_graph:  # recorded when used: the runs trained before it keep their config.json identity
            del d['cuda_graph']
        return d


def default_recipe(model: str, dataset: str) -> str:
    """finetune on an image folder or a Hugging Face dataset; otherwise the recipe the model's cfg announces (zam for
    resnet18/mobilenet, spem for resnet164), zam for models outside the zoo."""
    if dataset in OWN_DATASETS:
        return 'finetune'
    try:
        from ..models import backbone_recipe
        return backbone_recipe(model)
    except (ImportError, ValueError, KeyError):
        return 'zam'
