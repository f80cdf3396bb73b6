"""Shared fixtures.

tiny_cifar: a CIFAR-100 and a CIFAR-10 data set in torchvision's python format (the official archives' layout),
64 train / 32 test images each, written here with plain pickle (not with zamzoo's own writer) and read back by the
real torchvision reader. Use `tiny_cifar_arrays(dataset)` for the exact images and labels written.

skip_or_fail_in_ci(reason): for a test that needs something other than a Python dependency (git, a package index):
a skip with the reason, except under CI=true, where the missing thing is a failure.
"""
import os
import pickle

import numpy as np
import pytest

TINY_TRAIN, TINY_TEST = 64, 32
_NUM_CLASSES = {'cifar100': 100, 'cifar10': 10}


def pytest_configure(config):
    """Each pytest-xdist worker gets its share of the cores for torch's intra-op threads, and so do the processes its
    tests start (OMP_NUM_THREADS): two workers with torch's default threads put 4 OpenMP threads, which spin while
    they wait, on 2 cores (the whole suite on 2 cores: 537 s wall without this, 352 s with it)."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ['OMP_NUM_THREADS'] = str(threads)
        import torch
        torch.set_num_threads(threads)
    _build_the_onnx_function_table_once()


def _build_the_onnx_function_table_once():
    """torch's dynamo ONNX exporter asks onnxscript for its table of ONNX functions at every export, and onnxscript
    builds it anew by re-parsing the source of ~500 functions: 0.7 s of CPU time of the 1.8 s export of one
    attention module (median of 12 exports; docs/bench/test_time.md). The table depends only on the installed
    onnxscript, so each test process builds it once; the exports are unchanged. Where torch no longer asks for it
    this way, nothing is cached and the suite is only slower."""
    import functools
    import importlib
    try:
        from torch.onnx._internal._lazy_import import onnxscript_apis
        apis = importlib.import_module(onnxscript_apis._name)
        apis.get_torchlib_ops = functools.cache(apis.get_torchlib_ops)
    except (ImportError, AttributeError):
        pass


def skip_or_fail_in_ci(reason: str):
    if os.environ.get('CI') == 'true':
        pytest.fail(reason)
    pytest.skip(reason)


def write_images(root, counts, size=(12, 10), seed=0):
    """An image folder: `counts[cls]` random RGB PNGs of `size` (width, height) per class folder of `root`."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / cls / f'{i}.png')
    return root


def tiny_cifar_arrays(dataset: str):
    """(train_images, train_labels, test_images, test_labels, class_names): images (N, 32, 32, 3) uint8.

    Each class has its own mean colour (plus noise), so a model can learn something in a few steps."""
    nc = _NUM_CLASSES[dataset]
    rng = np.random.default_rng(1234 + nc)
    palette = rng.integers(30, 226, (nc, 3))

    def split(n, offset):
        labels = (np.arange(n) * 7 + offset) % nc
        noise = rng.integers(-30, 31, (n, 32, 32, 3))
        images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return images, labels.astype(np.int64)

    xtr, ytr = split(TINY_TRAIN, 0)
    xte, yte = split(TINY_TEST, 3)
    return xtr, ytr, xte, yte, [f'{dataset}_class_{i:03d}' for i in range(nc)]


def _rows(images):
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _dump(path, obj):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def write_tiny_cifar(root):
    xtr, ytr, xte, yte, names = tiny_cifar_arrays('cifar100')
    d = root / 'cifar-100-python'
    d.mkdir(parents=True, exist_ok=True)
    for name, x, y in (('train', xtr, ytr), ('test', xte, yte)):
        _dump(d / name, {'filenames': [f'{name}_{i}.png' for i in range(len(y))], 'batch_label': name,
                         'fine_labels': [int(v) for v in y], 'coarse_labels': [int(v) % 20 for v in y],
                         'data': _rows(x)})
    _dump(d / 'meta', {'fine_label_names': names, 'coarse_label_names': [f'super_{i}' for i in range(20)]})

    xtr, ytr, xte, yte, names = tiny_cifar_arrays('cifar10')
    d = root / 'cifar-10-batches-py'
    d.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(ytr)), 5), 1):
        _dump(d / f'data_batch_{i}', {'batch_label': f'training batch {i} of 5', 'labels': [int(v) for v in ytr[idx]],
                                      'data': _rows(xtr[idx]), 'filenames': [f'{j}.png' for j in idx]})
    _dump(d / 'test_batch', {'batch_label': 'testing batch 1 of 1', 'labels': [int(v) for v in yte],
                             'data': _rows(xte), 'filenames': [f'{j}.png' for j in range(len(yte))]})
    _dump(d / 'batches.meta', {'label_names': names, 'num_cases_per_batch': len(ytr) // 5, 'num_vis': 3072})
    return root


@pytest.fixture(scope='session')
def tiny_cifar(tmp_path_factory):
    """Folder holding cifar-100-python/ and cifar-10-batches-py/ (pass it as --data)."""
    return write_tiny_cifar(tmp_path_factory.mktemp('tiny_cifar'))


@pytest.fixture
def single_thread():
    """One intra-op thread for the test: the CPU is shared (OpenMP threads that wait on each other are very slow on
    a busy machine). Test modules opt in with `pytestmark = pytest.mark.usefixtures('single_thread')`."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def forked_zoo_workers():
    """The module's local zoo runs in processes forked from a server that imported zamzoo once
    (tests/forked_workers.py). Test modules opt in with pytestmark."""
    import subprocess
    import types

    import forked_workers
    from zamzoo.zoo import local

    forked_workers.start_server()
    shim = types.SimpleNamespace(**{**vars(subprocess), 'Popen': forked_workers.ForkedWorker})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local, 'subprocess', shim)
        yield


@pytest.fixture
def forget_registrations():
    """Leave the zoo as the other test files expect it: only its own rows (attentions a test registered are
    unregistered after it). Test modules that register attentions opt in with pytestmark."""
    from zamzoo.models import ATTENTIONS
    from zamzoo.models.plugins import unregister_attention
    before = set(ATTENTIONS)
    yield
    for name in set(ATTENTIONS) - before:
        unregister_attention(name)


def lighten_contract(monkeypatch):
    """From here on, `zamzoo compare`'s contract check runs without its CPU latency rounds and ONNX exports
    (`check_contract(latency=False, onnx=False)`), and its report's arm costs without latency rounds: for tests of
    compare that are not about those (test_contract is)."""
    from zamzoo.compare import contract

    def forced(fn, **fixed):  # over what the caller passes, unlike functools.partial's keywords
        return lambda *args, **kwargs: fn(*args, **{**kwargs, **fixed})

    monkeypatch.setattr(contract, 'check_contract', forced(contract.check_contract, latency=False, onnx=False))
    monkeypatch.setattr(contract, 'arm_costs', forced(contract.arm_costs, latency=False))


@pytest.fixture
def light_contract(monkeypatch):
    """lighten_contract for the whole test."""
    lighten_contract(monkeypatch)


def calibrated_attn(name: str, channels: int, seed: int = 0):
    """The zoo's attention `name` (`zamzoo.layers.create_attn`) in eval mode, its BatchNorms with random affines and
    running statistics (a fresh one's are the identity, which would hide a mistake in folding them)."""
    import torch
    from zamzoo.layers import create_attn
    torch.manual_seed(seed)
    return _randomize_batchnorms(create_attn(name, channels)).eval()


def calibrated_ulsam(channels: int, seed: int):
    """A ULSAM (4 groups) whose two BatchNorms have non-trivial affines and running statistics: a fresh one's are
    the identity, which would hide a mistake in folding them."""
    import torch
    from zamzoo.layers import ULSAM
    torch.manual_seed(seed)
    return _randomize_batchnorms(ULSAM(channels, groups=4))


def _randomize_batchnorms(module):
    """`module` with every BatchNorm's affine and running statistics drawn at random (in the order of modules())."""
    import torch
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return module


# The longest files first, by their durations in a full run (2026-12-06, test_bench.py's with inductor's cache empty,
# as on a new machine): pytest-xdist hands each worker a file at a time in collection order (addopts turns off its own
# reordering by number of tests, which put the long files with few tests last), so a long file collected last leaves
# one worker running it alone.
_LONGEST_FIRST = (
    'test_compare.py', 'test_zoo_slurm.py', 'test_status_trust.py', 'test_export.py', 'test_fused.py', 'test_bench.py',
    'test_timm_contract.py', 'test_models.py', 'test_zoo.py', 'test_sweep_trust.py', 'test_onnx_spellings.py',
    'test_bench_gpu.py', 'test_plugin_runs.py', 'test_openvino.py', 'test_onnx_dynamic_shapes.py', 'test_zoo_wait.py',
    'test_packaging.py', 'test_publish.py', 'test_train.py', 'test_contract.py', 'test_inputs.py', 'test_plugins.py',
    'test_transformers.py', 'test_installed_paths.py', 'test_quickstart.py', 'test_reliability.py')


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def write_cifar_run(folder, model: str, seed: int, top1=None, top5=None, dataset='cifar100'):
    """A finished run folder on the official CIFAR release, as the training loop leaves it (the files export reads),
    with random weights of seed `seed`; returns its state dict."""
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = timm.create_model(model, num_classes=100 if dataset == 'cifar100' else 10)
    _randomize_batchnorms(net)  # as trained: a round trip that dropped the running statistics would show
    folder.mkdir(parents=True)
    save_file(net.state_dict(), str(folder / 'model.safetensors'))
    # the fields of zamzoo.train's run folder that export reads
    config = dict(model=model, dataset=dataset, seed=seed, num_classes=net.num_classes, model_kwargs={},
                  recipe=dict(name='zam', version=1, epochs=2, batch_size=128, lr=0.1, weight_decay=5e-4),
                  recipe_name='zam', recipe_version=1, device='cpu')
    (folder / 'config.json').write_text(json.dumps(config))
    # a run on the official release, as the training loop records it (zamzoo.data.cifar_release)
    results = dict(model=model, dataset=dataset, recipe='zam', seed=seed, epochs=2, code_commit='f' * 40,
                   official_data=True, test_images=10_000)
    if top1 is not None:
        results.update(top1=top1, top5=top5, best_top1=top1 + 0.5, best_top5=top5, best_epoch=2)
    (folder / 'results.json').write_text(json.dumps(results))
    (folder / 'metrics.jsonl').write_text(
        '\n'.join(json.dumps(dict(epoch=e, train_loss=4.0 / e, lr=0.1)) for e in (1, 2)) + '\n')
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
