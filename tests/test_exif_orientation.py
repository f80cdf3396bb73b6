"""An image turned by its EXIF orientation: a Hugging Face data set serves it as `datasets` decodes it (turned, what
``ds[i]['image']`` shows); an image folder as torchvision's and timm's folder loaders do (as stored)."""
import numpy as np
import pytest
from PIL import Image

from zamzoo.data import DataSource, open_data

datasets = pytest.importorskip('datasets')


def _rotated_jpeg(path) -> np.ndarray:
    """A 12 x 8 JPEG stored as is, with EXIF orientation 6 (shown turned by 90 degrees); returns its stored pixels."""
    pixels = np.zeros((8, 12, 3), np.uint8)
    pixels[:, :4] = (250, 10, 10)
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return np.asarray(Image.open(path).convert('RGB'))


def test_exif_orientation_per_source(tmp_path):
    for split in ('train', 'val'):
        for cls in ('a', 'b'):
            (tmp_path / 'folder' / split / cls).mkdir(parents=True)
            stored = _rotated_jpeg(tmp_path / 'folder' / split / cls / 'x.jpg')
    folder = open_data(DataSource('folder', str(tmp_path / 'folder'))).train
    assert np.array_equal(np.asarray(folder[0][0]), stored)  # as stored: 8 x 12

    files = sorted(str(p) for p in (tmp_path / 'folder' / 'train').rglob('*.jpg'))
    part = datasets.Dataset.from_dict({'image': files, 'label': [0, 1]},
                                      features=datasets.Features({'image': datasets.Image(),
                                                                  'label': datasets.ClassLabel(names=['a', 'b'])}))
    datasets.DatasetDict({'train': part, 'test': part}).save_to_disk(str(tmp_path / 'hf'))
    hf = open_data(DataSource('hf', str(tmp_path / 'hf'))).train
    shown = np.asarray(datasets.load_from_disk(str(tmp_path / 'hf'))['train'][0]['image'].convert('RGB'))
    assert shown.shape == (12, 8, 3)  # datasets turns it
    assert np.array_equal(np.asarray(hf[0][0]), shown)
