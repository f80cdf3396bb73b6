"""`zamzoo viz` of runs and exports: the model built as `zamzoo eval` builds it, fed with its own preprocessing."""
import numpy as np
import pytest
import torch
from PIL import Image

from zamzoo import viz
from zamzoo.cli import main

MODEL = 'mobilenet_zam'


@pytest.fixture(scope='module')
def run48(tmp_path_factory):
    """A one-epoch run of mobilenet_zam at --img-size 48 with ZAM(pool='max'), on 8 random images, and its export."""
    from zamzoo.publish import export_run
    root = tmp_path_factory.mktemp('viz_run')
    data, run = root / 'images', root / 'run'
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (data / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(data / c / f'{i}.png')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(['train', '--model', MODEL, '--data', str(data), '--dataset', 'folder', '--holdout', '0.5',
                     '--epochs', '1', '--device', 'cpu', '--batch-size', '4', '--img-size', '48',
                     '--model-kwargs', 'attn_kwargs={"pool": "max"}', '--out', str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    export_run([run], root / 'export')
    return run, root / 'export', data / 'a' / '0.png'


def _zam_pools(model):
    return {m.pool for m in model.modules() if type(m).__name__ == 'ZAM'}


def test_run_model_is_built_with_its_model_kwargs(run48):
    run, _, _ = run48
    model = viz.load_model(MODEL, checkpoint=str(run))
    assert _zam_pools(model) == {'max'} and model.num_classes == 2


def test_run_of_another_model_is_one_line_error(run48, tmp_path, capsys):
    run, _, image = run48
    assert main(['viz', '--model', 'resnet18_zam', '--checkpoint', str(run), '--image', str(image),
                 '--out', str(tmp_path / 'm.png')]) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'resnet18_zam' in err and MODEL in err and len(err) < 300


def test_bare_weights_of_another_model_is_a_short_error(run48, tmp_path):
    from zamzoo.errors import ZamzooError
    run, _, _ = run48
    with pytest.raises(ZamzooError) as e:  # no config.json beside it: the shapes tell
        viz.load_model('resnet18_zam', checkpoint=str(run / 'model.safetensors'))
    assert len(str(e.value)) < 400


@pytest.mark.parametrize('source', ['run', 'export', 'local-dir'])
def test_input_is_the_runs_eval_transform(run48, source, capsys, tmp_path):
    run, export, image = run48
    if source == 'local-dir':
        model = viz.load_model(f'local-dir:{export}')
    else:
        model = viz.load_model(MODEL, checkpoint=str(run if source == 'run' else export))
    assert _zam_pools(model) == {'max'}
    x, rgb = viz.load_image(image, model)
    assert x.shape == (1, 3, 48, 48)
    # the 40x56 image: shorter side to floor(48 / 0.875) = 54 (bilinear), centre crop 48: not squashed
    from timm.data import create_transform
    expect = create_transform(input_size=(3, 48, 48), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
                              mean=model.pretrained_cfg['mean'], std=model.pretrained_cfg['std'])
    with Image.open(image) as im:
        torch.testing.assert_close(x[0], expect(im.convert('RGB')))
    assert main(['viz', '--model', MODEL, '--checkpoint', str(run), '--image', str(image),
                 '--out', str(tmp_path / 'm.png')]) == 0
    assert 'resize 54 bilinear, centre crop 48x48' in capsys.readouterr().out


def _randomized(name, channels=32):
    import zamzoo.layers as L
    torch.manual_seed(1)
    m = L.create_attn(name, channels)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_bam_maps_are_the_gate_it_applies(mode):
    m = _randomized('bam').train(mode == 'train')
    x = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        maps = m.attention_maps(x)
        gate = m(x) / x - 1  # BAM multiplies by 1 + sigmoid(Mc * Ms)
    torch.testing.assert_close(maps['spatial'], gate.mean(1, keepdim=True))
    torch.testing.assert_close(maps['channel'], gate.mean((2, 3), keepdim=True))


def test_cbam_maps_in_train_mode_are_those_forward_applies():
    m = _randomized('cbam').train()
    x = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        maps = m.attention_maps(x)
        torch.testing.assert_close(x * maps['channel'] * maps['spatial'], m(x))


def test_attention_maps_leave_module_state_unchanged():
    import zamzoo.layers as L
    for name in L.list_attn():
        m = _randomized(name).train()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        with torch.no_grad():
            m.attention_maps(torch.randn(4, 32, 8, 8) * 3 + 1)
        after = m.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), name
        assert m.training, name


@pytest.mark.parametrize('name', __import__('zamzoo.layers', fromlist=['list_attn']).list_attn())
def test_every_module_plugs_in_as_timm_se_layer(name):
    """timm's EfficientNet / MobileNet blocks build ``se_layer(chs, act_layer=act_layer)`` (mnasnet_small: tiny)."""
    import timm
    import zamzoo.layers as L
    torch.manual_seed(0)
    factory = L.get_attn(name)  # a class, or a functools.partial of one
    m = timm.create_model('mnasnet_small', num_classes=10, se_layer=factory)
    assert sum(isinstance(x, getattr(factory, 'func', factory)) for x in m.modules()) > 0
    m(torch.randn(2, 3, 32, 32)).sum().backward()


def test_act_layer_replaces_an_internal_activation_none_keeps_the_seeds():
    import zamzoo.layers as L
    from torch import nn
    for cls in (L.BAM, L.CBAM):
        assert not any(isinstance(x, nn.SiLU) for x in cls(32).modules())
        assert any(isinstance(x, nn.SiLU) for x in cls(32, act_layer=nn.SiLU).modules())
        assert any(isinstance(x, nn.ReLU) for x in cls(32, act_layer=None).modules())


@pytest.mark.parametrize('model, kind', [('resnet18_zam', 'ZAM(Avg&Max)'), ('resnet18_zam_avg', 'ZAM(Avg)'),
                                         ('resnet18_zam_max', 'ZAM(Max)'), ('resnet18_zamr', 'ZAM+R(Avg&Max)'),
                                         ('resnet18_se', 'SE')])
def test_figure_labels_name_the_variant(model, kind):
    import timm
    net = timm.create_model(model).eval()
    records, _ = viz.collect_attention(net, torch.randn(1, 3, 32, 32))
    assert records and {r.kind for r in records} == {kind}


def test_a_cifar_runs_maps_are_drawn_on_the_image_its_evaluation_sees(tiny_cifar, tmp_path, single_thread):
    """A CIFAR run's images are fed whole (ToTensor, Normalize): viz resized a 32x32 image to 36 and cropped it back
    to 32, the evaluation crop of image folders, so the maps were not of the input eval and training see."""
    from zamzoo.data import cifar_transforms
    run = tmp_path / 'run'
    assert main(['train', '--model', MODEL, '--data', str(tiny_cifar), '--epochs', '1', '--device', 'cpu',
                 '--batch-size', '16', '--out', str(run)]) == 0
    import json
    config = json.loads((run / 'config.json').read_text())
    image = tmp_path / 'x.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    x, _ = viz.load_image(image, viz.load_model(MODEL, checkpoint=str(run)))
    expected = cifar_transforms(None, config['mean'], config['std'], False)(Image.open(image).convert('RGB'))
    assert config['loader'] == 'dataloader' and torch.allclose(x[0], expected, atol=1e-6, rtol=0)
