"""The data sets zamzoo knows, in one place: names, class counts, display names and Hugging Face ids. A bottom
layer (like `zamzoo.recipes`): models (pretrained tags), data, train (CLI choices) and publish (cards) read it."""
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Dataset:
    name: str
    num_classes: Optional[int]           # None: as many as the image folder's / HF dataset's class list
    display_name: Optional[str] = None   # as model cards and tables print it
    hf_id: Optional[str] = None          # the Hugging Face dataset a model card links to
    train_images: Optional[int] = None   # images in the train split (an epoch), when fixed


# The order is the CLI's (`--dataset` choices) and the pretrained tags' (the default first).
DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset('cifar100', 100, 'CIFAR-100', 'uoft-cs/cifar100', train_images=50_000),
    Dataset('cifar10', 10, 'CIFAR-10', 'uoft-cs/cifar10', train_images=50_000),
    Dataset('folder', None),
    Dataset('hf', None),
)}
# The fixed-size data sets: the ones zamzoo's pretrained weights are trained on (their tags).
NUM_CLASSES: Dict[str, int] = {d.name: d.num_classes for d in DATASETS.values() if d.num_classes is not None}
CIFAR_DATASETS = tuple(NUM_CLASSES)
