"""zamzoo.data: CIFAR through torchvision's reader, clear errors, image folders, and the tensor loader's batched
augmentation ops (run here on CPU tensors)."""
import pickle
import re

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from conftest import TINY_TEST, TINY_TRAIN, tiny_cifar_arrays
from zamzoo.data import (DataLoaderBatches, TensorLoader, cifar_dataset, cifar_transforms, crop_flip, hflip,
                         image_folder, load_cifar, normalize, pad, random_crop, rotate)
from zamzoo.data.batches import rank_slice, shard_bounds
from zamzoo.errors import DataError
from zamzoo.recipes import get_recipe

pytestmark = pytest.mark.usefixtures('single_thread')


# ------------------------------------------------------------------------------------------------ reading

@pytest.mark.parametrize('dataset', ['cifar100', 'cifar10'])
def test_cifar_read_back_by_torchvision(tiny_cifar, dataset):
    xtr, ytr, xte, yte, names = tiny_cifar_arrays(dataset)
    images, targets, classes = load_cifar(tiny_cifar, dataset, train=True)
    assert images.shape == (TINY_TRAIN, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, torch.from_numpy(xtr).permute(0, 3, 1, 2))
    assert targets.tolist() == ytr.tolist()
    assert classes == names
    images, targets, _ = load_cifar(tiny_cifar, dataset, train=False)
    assert images.shape == (TINY_TEST, 3, 32, 32)
    assert torch.equal(images, torch.from_numpy(xte).permute(0, 3, 1, 2)) and targets.tolist() == yte.tolist()
    # the object is torchvision's own dataset class (a subclass that skips the md5 of the official archive)
    import torchvision
    ds = cifar_dataset(tiny_cifar, dataset)
    assert isinstance(ds, torchvision.datasets.CIFAR10)
    img, label = ds[0]
    assert img.size == (32, 32) and label == int(ytr[0])


def test_cifar_folder_itself_accepted(tiny_cifar):
    images, _, _ = load_cifar(tiny_cifar / 'cifar-100-python', 'cifar100')
    assert len(images) == TINY_TRAIN


def test_cifar_missing_names_expected_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar(tmp_path / 'nowhere', 'cifar100')
    msg = str(e.value)
    assert 'cifar-100-python/{train,test,meta}' in msg and 'does not exist' in msg and '--download' in msg
    (tmp_path / 'cifar-10-batches-py').mkdir()
    with pytest.raises(DataError) as e:
        load_cifar(tmp_path, 'cifar10')
    assert 'cifar-10-batches-py/{data_batch_1,data_batch_2,data_batch_3,data_batch_4,data_batch_5,test_batch,' \
           'batches.meta}' in str(e.value)


def test_malformed_cifar_files_and_unknown_names_are_clear_errors(tmp_path, tiny_cifar):
    import shutil
    bad = tmp_path / 'bad'
    shutil.copytree(tiny_cifar / 'cifar-100-python', bad / 'cifar-100-python')
    (bad / 'cifar-100-python' / 'train').write_bytes(b'not a pickle')
    with pytest.raises(DataError, match='malformed'):
        load_cifar(bad, 'cifar100')
    with open(bad / 'cifar-100-python' / 'train', 'wb') as f:  # right keys, wrong row length
        pickle.dump({'data': np.zeros((4, 100), np.uint8), 'fine_labels': [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match='cifar-100-python'):
        load_cifar(bad, 'cifar100')
    with open(bad / 'cifar-100-python' / 'train', 'wb') as f:  # images as (N, H, W, C), as torchvision's ds.data holds
        pickle.dump({'data': np.zeros((4, 32, 32, 3), np.uint8), 'fine_labels': [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match=re.escape("train: 'data' has shape (4, 32, 32, 3), expected (N, 3072)")):
        load_cifar(bad, 'cifar100')
    batches = tmp_path / 'c10' / 'cifar-10-batches-py'  # a truncated batch is named, not the seven files
    shutil.copytree(tiny_cifar / 'cifar-10-batches-py', batches)
    (batches / 'data_batch_3').write_bytes((batches / 'data_batch_3').read_bytes()[:500])
    with pytest.raises(DataError, match=r'c10/cifar-10-batches-py/data_batch_3: unreadable or malformed') as e:
        load_cifar(tmp_path / 'c10', 'cifar10')
    assert 'data_batch_1' not in str(e.value)
    with pytest.raises(ValueError, match='expected one of'):
        load_cifar(tiny_cifar, 'cifar1000')
    (tmp_path / 'cifar-100-python.tar.gz').write_bytes(b'an archive')  # --data at the download, not unpacked
    with pytest.raises(DataError, match=r'cifar-100-python.tar.gz is a file, not a folder: unpack an archive first'):
        load_cifar(tmp_path / 'cifar-100-python.tar.gz', 'cifar100')


def test_image_folder_reads_class_folders_and_names_the_missing_split(tmp_path):
    from PIL import Image
    for split in ('train', 'val'):
        for c in ('cat', 'dog'):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new('RGB', (40, 30), (i * 50, 100, 200)).save(tmp_path / split / c / f'{i}.png')
    ds = image_folder(tmp_path, 'train')
    assert ds.classes == ['cat', 'dog'] and len(ds) == 4
    with pytest.raises(DataError, match=r'val/<class>/<image>'):
        image_folder(tmp_path / 'missing', 'val')
    (tmp_path / 'only').mkdir()
    with pytest.raises(DataError, match='only/val is missing'):
        image_folder(tmp_path / 'only', 'val')


# ------------------------------------------------------------------------------------------------ augmentation ops

def _batch(b=5, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (b, c, h, w), generator=torch.Generator().manual_seed(seed)).float()


def test_random_crop_is_a_window_of_the_padded_image():
    x = _batch()
    p = 4
    dy = torch.tensor([0, 8, 4, 3, 7])
    dx = torch.tensor([0, 8, 4, 6, 1])
    out = random_crop(x, dy, dx, p)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(len(x)):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32])
    assert torch.equal(out[2], x[2])                       # offset (p, p) is the image itself
    assert torch.equal(out[0, :, :4, :], torch.zeros(3, 4, 32))   # offset 0: 4 rows of fill at the top


def test_hflip_by_mask():
    x = _batch()
    mask = torch.tensor([True, False, True, False, False])
    out = hflip(x, mask)
    for i in range(len(x)):
        assert torch.equal(out[i], x[i].flip(-1) if mask[i] else x[i])
    # crop + flip fused in one gather equals crop then flip
    dy, dx = torch.randint(0, 9, (5,)), torch.randint(0, 9, (5,))
    fused = crop_flip(pad(x, 4), dy, dx, mask, (32, 32))
    assert torch.equal(fused, hflip(random_crop(x, dy, dx, 4), mask))


def test_rotate_by_0_degrees_is_identity_and_by_90_is_rot90_counter_clockwise():
    x = _batch(4)
    assert torch.equal(rotate(x, torch.zeros(4)), x)
    assert torch.equal(rotate(x, torch.full((4,), 90.0)), torch.rot90(x, 1, (2, 3)))


@pytest.mark.parametrize('shape', [(4, 32, 32), (2, 16, 24)], ids=['square', 'non-square'])
@pytest.mark.parametrize('angle', [15.0, -15.0, 7.3])
def test_rotate_equals_torchvision_nearest_rotate(angle, shape):
    b, h, w = shape
    x = _batch(b, h=h, w=w)
    ref = TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST)
    assert torch.equal(rotate(x, torch.full((b,), angle)), ref)


@pytest.mark.parametrize('size', [32, 224])
def test_rotate_takes_torchvisions_source_pixel_at_random_angles(size):
    """affine_grid's grid rounds otherwise than torchvision's: at 224 x 224 about one image in five had a pixel from
    a neighbouring source pixel (an image of distinct pixels shows which one each output takes)."""
    g = torch.Generator().manual_seed(0)
    n = 60
    x = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size).expand(n, 1, size, size).contiguous()
    angles = (torch.rand(n, generator=g) * 2 - 1) * 15
    out = rotate(x, angles)
    for k in range(n):
        ref = TF.rotate(x[k:k + 1], float(angles[k]), interpolation=InterpolationMode.NEAREST)
        assert torch.equal(out[k:k + 1], ref), (k, float(angles[k]))


def test_rotate_turns_each_image_by_its_own_angle():
    x = _batch(4)
    angles = torch.tensor([0.0, 90.0, -15.0, 15.0])
    out = rotate(x, angles)
    for i, a in enumerate(angles.tolist()):
        assert torch.equal(out[i], rotate(x[i:i + 1], torch.tensor([a]))[0])


def test_rotate_refuses_integer_images():
    with pytest.raises(TypeError):
        rotate(_batch(4).to(torch.uint8), torch.zeros(4))


def test_normalize_is_division_by_255_then_the_recipes_mean_and_std():
    x = _batch().to(torch.uint8)
    mean, std = get_recipe('zam').stats('cifar100')
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, mean, std), ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ loaders

def _loader(images, targets, **kw):
    mean, std = get_recipe('zam').stats('cifar100')
    batch_size = kw.pop('batch_size', 16)
    args = dict(train=True, crop_padding=4, hflip=True, rotation=15.0, seed=3)
    args.update(kw)
    return TensorLoader(images, targets, batch_size, mean, std, **args)


def test_tensor_loader_epochs_and_shapes(tiny_cifar):
    images, targets, _ = load_cifar(tiny_cifar, 'cifar100')
    loader = _loader(images, targets, batch_size=24)
    assert len(loader) == 3 and loader.num_samples == TINY_TRAIN             # 24 + 24 + 16, last batch kept
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(24, 3, 32, 32)] * 2 + [(16, 3, 32, 32)]
    assert [b[2] for b in batches] == [24, 24, 16]
    assert all(b[0].dtype == torch.float32 and b[1].dtype == torch.int64 for b in batches)
    # every image exactly once per epoch
    ys = torch.cat([b[1] for b in batches])
    assert sorted(ys.tolist()) == sorted(targets.tolist())
    again = list(loader)                                                         # same epoch: same data
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    loader.set_epoch(1)                                                          # next epoch: new order/augmentation
    assert not torch.equal(next(iter(loader))[0], batches[0][0])
    cl = _loader(images, targets, batch_size=24, channels_last=True)
    x = next(iter(cl))[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, batches[0][0])
    # drop_last, and a test loader (no augmentation, fixed order) equals plain normalisation
    assert len(_loader(images, targets, batch_size=24, drop_last=True)) == 2
    test = _loader(images, targets, batch_size=50, train=False)
    x, y, n = next(iter(test))
    mean, std = get_recipe('zam').stats('cifar100')
    assert torch.equal(y, targets[:50]) and n == 50
    torch.testing.assert_close(x, normalize(images[:50], mean, std))


def test_tensor_loader_ranks_partition_the_global_batch(tiny_cifar):
    images, targets, _ = load_cifar(tiny_cifar, 'cifar100')
    single = list(_loader(images, targets, batch_size=18))                       # 18, 18, 18, 10
    ranks = [list(_loader(images, targets, batch_size=18, rank=r, world_size=3)) for r in range(3)]
    for step, (x, y, n) in enumerate(single):
        parts = [ranks[r][step] for r in range(3)]
        assert all(p[2] == n for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert [rank_slice(0, 10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(10, 4, False) == [(0, 4), (4, 8), (8, 10)] and shard_bounds(10, 4, True) == [(0, 4), (4, 8)]


def test_every_process_trains_on_at_least_two_images_of_every_batch():
    """BatchNorm cannot train on one image: 34 images in batches of 16 over 2 processes gave the last batch of 2 as
    parts of 1 image (both ranks raised, where one process trained). Every size up to 40, batches of 2 to 12, 1 to
    4 processes, both loaders' batches: each rank's part of a training batch holds >= 2 images, every image is
    trained once (none dropped but the lone too-small batch), and evaluation still scores every image."""
    from zamzoo.data.batches import epoch_bounds
    from zamzoo.data.loaders import EpochBatchSampler
    assert epoch_bounds(34, 16, False, 2, train=True) == [(0, 16), (16, 34)]
    assert epoch_bounds(34, 16, False, 1, train=True) == [(0, 16), (16, 32), (32, 34)]  # one process: as before
    for world in range(1, 5):
        for batch in range(2 * world, 13, world):
            for n in range(1, 41):
                bounds = epoch_bounds(n, batch, False, world, train=True)
                assert (bounds[-1][1] if bounds else 0) == (n if n >= 2 * world else 0), (n, batch, world)
                for r in range(world):
                    parts = EpochBatchSampler(n, batch, True, rank=r, world_size=world).parts
                    assert len(parts) == len(bounds) and all(hi - lo >= 2 for lo, hi, _ in parts), (n, batch, r)
                evaluated = epoch_bounds(n, batch, False, world, train=False)
                assert evaluated[-1][1] == n and all(hi - lo <= batch for lo, hi in evaluated)


def test_dataloader_path_deterministic_and_sharded(tiny_cifar):
    recipe = get_recipe('zam')
    mean, std = recipe.stats('cifar100')
    ds = cifar_dataset(tiny_cifar, 'cifar100')

    def batches(**kw):
        b = DataLoaderBatches(ds, 32, cifar_transforms(recipe, mean, std, True), train=True, seed=5, **kw)
        b.set_epoch(2)
        return list(b)

    one = batches()
    assert len(one) == 2 and one[0][0].shape == (32, 3, 32, 32) and one[0][2] == 32
    torch.manual_seed(123)  # the global RNG does not matter: each sample is augmented under its own seed
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, batches()))
    r0, r1 = batches(rank=0, world_size=2), batches(rank=1, world_size=2)
    for (x, y, n), a, b in zip(one, r0, r1):
        assert torch.equal(torch.cat([a[0], b[0]]), x) and torch.equal(torch.cat([a[1], b[1]]), y)


def test_each_sample_is_augmented_under_its_own_seed_and_the_global_rng_is_untouched(tiny_cifar):
    """Sample i of epoch e is the transform run right after torch.manual_seed(seed of (run seed, e, 1000 + i)): the
    documented stream, whatever seeds it; the caller's RNG state is as it was."""
    from zamzoo.data.batches import epoch_generator
    from zamzoo.data.loaders import SeededTransform

    recipe = get_recipe('zam')
    transform = cifar_transforms(recipe, *recipe.stats('cifar100'), True)
    ds = cifar_dataset(tiny_cifar, 'cifar100')
    seeded = SeededTransform(ds, transform, seed=5)
    seeded.set_epoch(2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    got = [seeded[i][0] for i in (0, 7, 8)]
    assert torch.equal(torch.get_rng_state(), before)
    for i, img in zip((0, 7, 8), got):
        torch.manual_seed(epoch_generator(5, 2, 1000 + i).initial_seed())
        assert torch.equal(transform(ds[i][0]), img)
    assert not torch.equal(got[1], transform(ds[7][0]))  # a fresh draw differs: the seed decided the crop and flip
