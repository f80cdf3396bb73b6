"""The data sets zamzoo knows, in one place: their names, class counts, and the display names and Hugging Face
dataset ids model cards cite. A bottom-layer module (like `zamzoo.recipes`), so that models (pretrained tags),
data (the readers), train (CLI choices) and publish (model cards) all read the same facts."""
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Dataset:
    name: str
    num_classes: Optional[int]           # None: as many as the image folder's / HF dataset's class list
    display_name: Optional[str] = None   # as model cards and tables print it
    hf_id: Optional[str] = None          # the Hugging Face dataset a model card links to


# The order is the CLI's (`--dataset` choices) and the pretrained tags' (the default first).
DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset('cifar100', 100, 'CIFAR-100', 'uoft-cs/cifar100'),
    Dataset('cifar10', 10, 'CIFAR-10', 'uoft-cs/cifar10'),
    Dataset('folder', None),
    Dataset('hf', None),
)}
# The fixed-size data sets: the ones zamzoo's pretrained weights are trained on (their tags).
NUM_CLASSES: Dict[str, int] = {d.name: d.num_classes for d in DATASETS.values() if d.num_classes is not None}
CIFAR_DATASETS = tuple(NUM_CLASSES)
