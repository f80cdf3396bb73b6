"""Data: the data sets (`sources`: CIFAR-10/100 through torchvision's readers, image folders, Hugging Face
datasets), image reading, and the two loaders the training loop uses (a device-resident tensor loader with batched
augmentation, and a plain DataLoader)."""
from ..dataset_table import NUM_CLASSES
from .cifar import CIFAR_DATASETS, cifar_dataset, cifar_tensors, expected_files, load_cifar
from .folder import IMAGE_EXTENSIONS, FileList, holdout_split, image_folder
from .tensor_loader import TensorLoader, crop_flip, hflip, normalize, pad, random_crop, rotate
from .images import check_image, open_rgb, to_rgb
from .loaders import (EVAL_CROP_PCT, EVAL_INTERPOLATION, FOLDER_CROP_SCALE, DataLoaderBatches, PilImages,
                      cifar_transforms, eval_resize, folder_transforms)
from .sources import (DATASETS, DataSource, OpenedData, check_data_exists, check_dataset, check_same_data,
                      classes_only_in, data_tag, open_data, own_data_tag)
from .tensors import check_memory, dataset_tensors, tensor_bytes

__all__ = [
    'CIFAR_DATASETS', 'NUM_CLASSES', 'cifar_dataset', 'cifar_tensors', 'expected_files', 'load_cifar',
    'IMAGE_EXTENSIONS', 'FileList', 'holdout_split', 'image_folder',
    'TensorLoader', 'crop_flip', 'hflip', 'normalize', 'pad', 'random_crop', 'rotate',
    'check_image', 'open_rgb', 'to_rgb',
    'EVAL_CROP_PCT', 'EVAL_INTERPOLATION', 'DataLoaderBatches', 'PilImages', 'cifar_transforms', 'eval_resize',
    'folder_transforms', 'FOLDER_CROP_SCALE',
    'DATASETS', 'DataSource', 'OpenedData', 'check_data_exists', 'check_dataset', 'check_same_data',
    'classes_only_in', 'data_tag', 'open_data', 'own_data_tag',
    'check_memory', 'dataset_tensors', 'tensor_bytes',
]
