"""zamzoo.viz / `zamzoo viz`: attention maps of every attention type, Grad-CAM, errors."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import zamzoo
from zamzoo import viz
from zamzoo.cli import main

# one model per attention type of the zoo; what its modules must yield
ATTENTIONS = {
    'plain': (), 'zam': ('channel', 'spatial'), 'zam_avg': ('channel', 'spatial'), 'zam_max': ('channel', 'spatial'),
    'zamr': ('channel', 'spatial'), 'ulsam': ('spatial',), 'nam': ('channel',), 'spem': ('channel',),
    'se': ('channel',), 'eca': ('channel',), 'cbam': ('channel', 'spatial'), 'bam': ('channel', 'spatial'),
    'simam': ('spatial',),
}


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp('img') / 'photo.jpg'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(path)  # not 32x32, not square
    return path


def test_every_zoo_attention_type_is_covered():
    assert set(ATTENTIONS) == set(zamzoo.models.ATTENTIONS)  # a new attention of the zoo needs its expected maps here


@pytest.mark.parametrize('attn', sorted(ATTENTIONS))
def test_viz_draws_every_attention_type(attn, image, tmp_path):
    torch.manual_seed(0)
    name = f'resnet18_{attn}'
    model = timm.create_model(name)
    out = tmp_path / f'{name}.png'
    result = viz.visualize(model, image, out, title=name)

    assert result.image.shape == (32, 32, 3) and 0 <= result.image.min() and result.image.max() <= 1
    assert result.cam.shape == (32, 32) and result.cam.min() >= 0 and result.cam.max() <= 1
    assert result.cam.max() > 0  # random weights still give a non-constant class activation
    n_modules = len(viz.attention_modules(model))
    assert len(result.records) == n_modules and (n_modules > 0) == (attn != 'plain')
    for rec in result.records:
        kinds = tuple(k for k in ('channel', 'spatial') if getattr(rec, k) is not None)
        assert kinds == ATTENTIONS[attn], rec
        if rec.channel is not None:
            assert rec.channel.ndim == 1 and rec.channel.size in (64, 128, 256, 512, 1024)
            assert np.all((rec.channel >= 0) & (rec.channel <= 1))
        if rec.spatial is not None:
            assert rec.spatial.ndim == 3 and np.all((rec.spatial >= 0) & (rec.spatial <= 1))
            overlay = result.overlays[rec.name]
            assert overlay.shape == (32, 32) and overlay.min() >= 0 and overlay.max() <= 1
    if attn == 'ulsam':  # one map per group, each a softmax over H x W
        rec = result.records[0]
        assert rec.spatial.shape[0] == 4 and np.allclose(rec.spatial.sum((1, 2)), 1, atol=1e-4)

    with Image.open(out) as png:
        assert png.format == 'PNG' and png.size[0] > 200 and png.size[1] > 200
    assert not list(tmp_path.glob('.*.tmp'))  # written atomically


def test_maps_are_the_ones_the_module_applies(image):
    # the pre-hook hands the module its real input: recompute the first ZAM's maps from the stage input
    model = timm.create_model('resnet18_zam').eval()
    x, _ = viz.load_image(image, model)
    records, _ = viz.collect_attention(model, x)
    captured = {}
    block = model.stages[0][0]
    block.attn.register_forward_pre_hook(lambda m, inp: captured.setdefault('x', inp[0]))
    with torch.no_grad():
        model(x)
        expect = block.attn.attention_maps(captured['x'])
    assert records[0].name == 'stages.0.0.attn'
    np.testing.assert_allclose(records[0].channel, expect['channel'].flatten().numpy(), rtol=1e-6)
    np.testing.assert_allclose(records[0].spatial, expect['spatial'][0].numpy(), rtol=1e-6)


def test_image_is_normalised_with_the_models_cfg(image):
    model = timm.create_model('resnet164_plain')  # the spem recipe's statistics, not the zam one's
    x, rgb = viz.load_image(image, model)
    mean = torch.tensor(model.pretrained_cfg['mean']).view(3, 1, 1)
    std = torch.tensor(model.pretrained_cfg['std']).view(3, 1, 1)
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x[0], (torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std)


def test_cli_with_checkpoint(image, tmp_path, capsys):
    model = timm.create_model('mobilenet_simam', num_classes=10)
    ckpt = tmp_path / 'model.safetensors'
    save_file(model.state_dict(), str(ckpt))
    out = tmp_path / 'maps.png'
    assert main(['viz', '--model', 'mobilenet_simam', '--checkpoint', str(ckpt), '--image', str(image),
                 '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and '13 attention modules' in printed and 'random initialisation' not in printed
    assert main(['viz', '--model', 'mobilenet_simam', '--image', str(image), '--out', str(out)]) == 0
    assert 'weights: the random initialisation' in capsys.readouterr().out  # said, not only in the figure's title
    # any PNG passed for one viz wrote: the user's own image (or --image itself) was silently replaced
    photo = image.read_bytes()
    assert main(['viz', '--model', 'mobilenet_simam', '--image', str(image), '--out', str(image)]) == 2
    assert 'is the --image: the figure would replace the image it is drawn on' in capsys.readouterr().err
    other = tmp_path / 'photo.png'
    other.write_bytes(photo)
    assert main(['viz', '--model', 'mobilenet_simam', '--image', str(image), '--out', str(other)]) == 2
    assert 'is not a figure zamzoo viz wrote; refusing to overwrite it' in capsys.readouterr().err
    assert image.read_bytes() == other.read_bytes() == photo
    loaded = viz.load_model('mobilenet_simam', checkpoint=str(ckpt))
    assert loaded.num_classes == 10
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())


def test_a_model_whose_outputs_are_nan_gets_no_maps(image, tmp_path, capsys):
    """A NaN classifier bias made every logit NaN: viz drew 'Grad-CAM of class 0' over maps turned to zeros."""
    model = timm.create_model('mobilenet_zam', num_classes=10)
    state = model.state_dict()
    state['fc.bias'][3] = float('nan')
    save_file(state, str(tmp_path / 'model.safetensors'))
    out = tmp_path / 'maps.png'
    assert main(['viz', '--model', 'mobilenet_zam', '--checkpoint', str(tmp_path / 'model.safetensors'),
                 '--image', str(image), '--out', str(out)]) == 2
    assert "the model's outputs or attention maps hold NaN or infinity" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize('case', ['missing', 'directory', 'not_an_image', 'truncated', 'out_not_png', 'bad_ckpt'])
def test_cli_errors_are_clear(case, image, tmp_path, capsys):
    args = {'image': str(image), 'out': str(tmp_path / 'x.png'), 'extra': []}
    expect = {
        'missing': 'image not found: ',
        'directory': 'is a directory',
        'not_an_image': 'cannot read',
        'truncated': 'cannot read',
        'out_not_png': '--out must name a .png file',
        'bad_ckpt': 'checkpoint not found',
    }[case]
    if case == 'missing':
        args['image'] = str(tmp_path / 'nope.png')
    elif case == 'directory':
        args['image'] = str(tmp_path)
    elif case == 'not_an_image':
        bad = tmp_path / 'notes.txt'
        bad.write_text('not an image')
        args['image'] = str(bad)
    elif case == 'truncated':
        bad = tmp_path / 'cut.png'
        bad.write_bytes(image.read_bytes()[:40])
        args['image'] = str(bad)
    elif case == 'out_not_png':
        args['out'] = str(tmp_path / 'x.jpg')
    elif case == 'bad_ckpt':
        args['extra'] = ['--checkpoint', str(tmp_path / 'none.safetensors')]
    rc = main(['viz', '--model', 'resnet18_zam', '--image', args['image'], '--out', args['out'], *args['extra']])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('zamzoo viz: error: ') and expect in err, err
    assert 'Traceback' not in err
    assert not (tmp_path / 'x.png').exists()
