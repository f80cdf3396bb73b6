"""Data: CIFAR-10/100 through torchvision's readers, image folders, and the two loaders the training loop uses
(a device-resident tensor loader with batched augmentation, and a plain DataLoader)."""
from .cifar import CIFAR_DATASETS, NUM_CLASSES, cifar_dataset, cifar_tensors, expected_files, load_cifar
from .gpu import TensorLoader, crop_flip, hflip, normalize, pad, random_crop, rotate
from .loaders import DataLoaderBatches, PilImages, cifar_transforms, folder_transforms, image_folder

__all__ = [
    'CIFAR_DATASETS', 'NUM_CLASSES', 'cifar_dataset', 'cifar_tensors', 'expected_files', 'load_cifar',
    'TensorLoader', 'crop_flip', 'hflip', 'normalize', 'pad', 'random_crop', 'rotate',
    'DataLoaderBatches', 'PilImages', 'cifar_transforms', 'folder_transforms', 'image_folder',
]
