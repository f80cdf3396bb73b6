"""zamzoo.train.checkpoint's weights reader (timm's `load_state_dict` with our errors) and seeding (timm's
`random_seed`)."""
import pickle
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from zamzoo.errors import NotFoundError, ZamzooError
from zamzoo.train.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, load_weights,
                                     seed_everything)

STATE = {'conv.weight': torch.arange(6.0).view(2, 3), 'fc.bias': torch.tensor([1.5, -2.0])}


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('wrap', [
    lambda s: s,
    lambda s: {f'module._orig_mod.{k}': v for k, v in s.items()},         # DDP around torch.compile
    lambda s: {'format': CHECKPOINT_FORMAT, 'version': 1, 'epoch': 3, 'model': s, 'optimizer': {}},
    lambda s: {'state_dict': {f'module.{k}': v for k, v in s.items()}, 'epoch': 1},
], ids=['state-dict', 'prefixed-keys', 'zamzoo-checkpoint', 'state_dict-key'])
def test_pt_files_give_the_bare_model_state_dict_bit_for_bit(tmp_path, wrap):
    torch.save(wrap(STATE), tmp_path / 'w.pt')
    _same(load_weights(tmp_path / 'w.pt'), STATE)


def test_a_run_folder_reads_its_safetensors_before_its_checkpoint(tmp_path):
    save_file(STATE, str(tmp_path / 'model.safetensors'))
    torch.save({'format': CHECKPOINT_FORMAT, 'model': {k: v + 1 for k, v in STATE.items()}}, tmp_path / 'checkpoint.pt')
    _same(load_weights(tmp_path), STATE)


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ('pwned',))

    with open(tmp_path / 'evil.pt', 'wb') as f:
        pickle.dump({'w': Payload()}, f)
    with pytest.raises(ZamzooError, match='never unpickles arbitrary objects'):
        load_weights(tmp_path / 'evil.pt')


def test_unreadable_or_missing_weights_are_clear_errors(tmp_path):
    (tmp_path / 'bad.safetensors').write_bytes(b'not safetensors')
    (tmp_path / 'config.json').write_text('{"architecture": "resnet18_zam"}')  # `--init` given the wrong file
    for name in ('bad.safetensors', 'config.json'):  # torch's error was about pickles, suggesting weights_only=False
        with pytest.raises(ZamzooError, match=f'{name} is not a weights file \\(neither safetensors nor a torch.save '
                                              f'file; it begins with b'):
            load_weights(tmp_path / name)
    save_file(STATE, str(tmp_path / 'cut.safetensors'))
    (tmp_path / 'cut.safetensors').write_bytes((tmp_path / 'cut.safetensors').read_bytes()[:-4])
    with pytest.raises(ZamzooError, match='cut.safetensors is not a readable safetensors file'):
        load_weights(tmp_path / 'cut.safetensors')
    torch.save({'w': torch.zeros(1), 'step': 3}, tmp_path / 'mixed.pt')
    with pytest.raises(ZamzooError, match='does not hold a model state dict: expected a dict of parameter name -> '
                                          'tensor, found values of type int'):
        load_weights(tmp_path / 'mixed.pt')
    with pytest.raises(NotFoundError, match='checkpoint not found'):
        load_weights(tmp_path / 'nothing.pt')
    with pytest.raises(ZamzooError, match='holds no weights'):
        load_weights(tmp_path)


def test_a_checkpoint_of_a_newer_zamzoo_says_which_versions_this_one_reads(tmp_path):
    torch.save({'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION + 1}, tmp_path / 'checkpoint.pt')
    with pytest.raises(ZamzooError, match=rf'newer zamzoo \(checkpoint version {CHECKPOINT_VERSION + 1}; this zamzoo '
                                          rf'reads versions up to {CHECKPOINT_VERSION}\): upgrade zamzoo'):
        load_checkpoint(tmp_path / 'checkpoint.pt')


@pytest.mark.parametrize('seed', [0, 7, 2 ** 32 + 5])
def test_seed_everything_seeds_python_numpy_and_torch(seed):
    # the same draws as each RNG seeded on its own: torch with the seed, Python's and numpy's with it modulo 2**32
    seed_everything(seed)
    drawn = random.random(), np.random.rand(), torch.rand(3)
    assert drawn[0] == random.Random(seed % 2 ** 32).random()
    assert drawn[1] == np.random.RandomState(seed % 2 ** 32).rand()
    assert torch.equal(drawn[2], torch.rand(3, generator=torch.Generator().manual_seed(seed)))
