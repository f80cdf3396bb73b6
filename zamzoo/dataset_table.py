"""The data sets zamzoo knows, in one place: names, class counts, display names and Hugging Face ids. A bottom
layer (like `zamzoo.recipes`): models (pretrained tags), data, train (CLI choices) and publish (cards) read it."""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Dataset:
    name: str
    num_classes: Optional[int]           # None: as many as the image folder's / HF dataset's class list
    display_name: Optional[str] = None   # as model cards and tables print it
    hf_id: Optional[str] = None          # the Hugging Face dataset a model card links to
    train_images: Optional[int] = None   # images in the train split (an epoch), when fixed
    class_names: Tuple[str, ...] = ()    # by label index, as the data set's meta file lists them


# CIFAR's meta files (`batches.meta` 'label_names', `meta` 'fine_label_names'): the names of the labels 0, 1, ...
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
CIFAR100_CLASSES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle',
    'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
    'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
    'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
    'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
    'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
    'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider',
    'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger',
    'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm',
)

# The order is the CLI's (`--dataset` choices) and the pretrained tags' (the default first).
DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset('cifar100', 100, 'CIFAR-100', 'uoft-cs/cifar100', train_images=50_000, class_names=CIFAR100_CLASSES),
    Dataset('cifar10', 10, 'CIFAR-10', 'uoft-cs/cifar10', train_images=50_000, class_names=CIFAR10_CLASSES),
    Dataset('folder', None),
    Dataset('hf', None),
)}
# The fixed-size data sets: the ones zamzoo's pretrained weights are trained on (their tags).
NUM_CLASSES: Dict[str, int] = {d.name: d.num_classes for d in DATASETS.values() if d.num_classes is not None}
CIFAR_DATASETS = tuple(NUM_CLASSES)
DEFAULT_DATASET = CIFAR_DATASETS[0]  # the CLI's `--dataset` default and the registry's default tag
# The user's own data (an image folder, a Hugging Face data set): classes, statistics and tags of its own.
OWN_DATASETS = tuple(d.name for d in DATASETS.values() if d.num_classes is None)
