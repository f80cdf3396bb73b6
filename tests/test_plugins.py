"""Attention modules from outside the zoo: register_attention, entry points, `--attn file.py:Class`, the source
recorded in config.json and checked on resume, and the zoo worker that imports the module before building."""
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import zamzoo
from zamzoo.cli import main
from zamzoo.errors import UsageError, WeightsError
from zamzoo.models import ATTENTIONS, BACKBONES, ZOO
from zamzoo.models.plugins import check_attention_source, load_attention, unregister_attention

pytestmark = pytest.mark.usefixtures('single_thread', 'forget_registrations')
ROOT = Path(__file__).resolve().parents[1]

MODULE_SOURCE = '''
from torch import nn


class Zeroing(nn.Module):
    """Multiplies its input by 0, or by `scale` (output shaped like the input)."""

    def __init__(self, channels, scale=0.0, device=None, dtype=None):
        super().__init__()
        self.channels, self.scale = channels, scale

    def forward(self, x):
        return x * self.scale


class Scaled(nn.Module):
    def __init__(self, channels, scale=1.0, device=None, dtype=None):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale
'''


class Identity(nn.Module):
    def __init__(self, channels, scale=1.0, device=None, dtype=None):
        super().__init__()
        self.channels, self.scale = channels, scale

    def forward(self, x):
        return x * self.scale


class Other(Identity):
    pass


def _python(code_or_args, tmp_path, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, extra_path), str(ROOT)]), OMP_NUM_THREADS='1')
    args = ['-c', code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def _image_folder(root: Path, per_class: int = 8) -> Path:
    from PIL import Image
    rng = torch.Generator().manual_seed(0)
    for c in ('a', 'b'):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / c / f'{i}.png')
    return root


def test_registered_module_is_a_zoo_model_for_every_backbone():
    r = zamzoo.register_attention('plug_ident', Identity, scale=2.0)
    assert r.models == {b: f'{b}_plug_ident' for b in BACKBONES} and r.sha256 == hashlib.sha256(
        Path(__file__).read_bytes()).hexdigest() and r.source == str(Path(__file__).resolve())
    assert ATTENTIONS['plug_ident'].plugin._asdict() == r.record() and all(n in ZOO for n in r.models.values())
    assert set(r.models.values()) <= set(timm.list_models('*_plug_ident')) and set(r.models.values()) <= set(
        zamzoo.list_models('*_plug_ident'))

    model = timm.create_model('resnet18_plug_ident', num_classes=10).eval()
    attns = [m for m in model.modules() if isinstance(m, Identity)]
    assert len(attns) == 8 and all(a.scale == 2.0 for a in attns)  # one per block, options bound
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    features = timm.create_model('resnet18_plug_ident', features_only=True)(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in features] == [64, 64, 128, 256, 512]
    assert timm.create_model('mobilenetv2_plug_ident', num_classes=0)(torch.randn(1, 3, 32, 32)).shape == (1, 1280)
    assert isinstance(zamzoo.create_attn('plug_ident', 16), Identity)
    plain = timm.create_model('mobilenet_plain', attn_layer='plug_ident', attn_kwargs=dict(scale=3.0))
    assert [m.scale for m in plain.modules() if isinstance(m, Identity)] == [3.0] * 13  # by layer name, timm style

    assert not [n for n in timm.list_models(pretrained=True) if 'plug_ident' in n]
    with pytest.raises(WeightsError, match='resnet18_plug_ident'):
        timm.create_model('resnet18_plug_ident', pretrained=True)
    assert zamzoo.register_attention('plug_ident', Identity, scale=2.0) == r  # a worker re-importing: no-op

    unregister_attention('plug_ident')
    assert 'resnet18_plug_ident' not in ZOO and not timm.is_model('resnet18_plug_ident')
    assert 'plug_ident' not in zamzoo.list_attn() and not timm.list_models('*plug_ident*')
    with pytest.raises(UsageError, match='not registered at run time'):
        unregister_attention('zam')
    zamzoo.register_attention('plug_ident', Other)  # then another class may take the name
    assert isinstance(timm.create_model('resnet18_plug_ident').stages[0][0].attn, Other)


@pytest.mark.parametrize('name, cls, match', [
    ('zam', Identity, 'already in the zoo table'),         # a zoo attention
    ('zca', Identity, "'zca' is taken"),                   # a layer of the registry
    ('gn', Identity, 'resnet50_gn.*already registered in timm'),  # timm has resnet50_gn
    ('Bad-Name', Identity, 'lowercase name'),
    ('plain', Identity, 'lowercase name|taken|already'),
    ('plug_nocall', 42, 'expected a module class'),
])
def test_bad_registrations_are_refused_and_register_nothing(name, cls, match):
    before = (dict(ATTENTIONS), set(ZOO), zamzoo.list_attn())
    with pytest.raises(UsageError, match=match):
        zamzoo.register_attention(name, cls)
    assert (dict(ATTENTIONS), set(ZOO), zamzoo.list_attn()) == before


def test_another_class_under_a_taken_plugin_name_is_refused():
    zamzoo.register_attention('plug_twice', Identity)
    with pytest.raises(UsageError, match='taken'):
        zamzoo.register_attention('plug_twice', Other)
    with pytest.raises(UsageError, match='taken'):
        zamzoo.register_attention('plug_twice', Identity, scale=3.0)


def _num_params(model_name):
    return sum(p.numel() for p in timm.create_model(model_name).parameters())


def test_options_are_recorded_and_bound_again_wherever_a_run_is_read():
    """A new process (eval, export, a resume, a zoo worker) rebuilt a registered module from its record without the
    options bound at registration: another model (here SE's rd_divisor: other parameter counts)."""
    from zamzoo.models.plugins import ensure_attention
    from zamzoo.publish.export import _attention_module
    r = zamzoo.register_attention('plug_se8', zamzoo.layers.SE, rd_divisor=8)
    registered = _num_params('resnet18_plug_se8')
    record = json.loads(json.dumps(r.record()))  # as config.json holds it
    assert record['options'] == {'rd_divisor': 8} and record['spec'] == 'zamzoo.layers.se_eca:SE'
    assert registered == 11_310_244 != _num_params('resnet18_se')
    snippet = _attention_module('resnet18_plug_se8')['attention_module']['register_before_create_model']

    unregister_attention('plug_se8')  # as another process meets the run
    ensure_attention(record)
    assert _num_params('resnet18_plug_se8') == registered
    unregister_attention('plug_se8')
    exec(snippet)  # what an export's config.json and card tell its user to run
    assert _num_params('resnet18_plug_se8') == registered


def test_a_packages_module_installed_elsewhere_is_the_runs_when_its_files_are(tmp_path, monkeypatch):
    """An export (or run) of a package's module was refused as 'gone' once the package was installed at another
    path (another environment, machine, Python), though its files were the same: their content decides. Where the
    run's files were still there, the module Python imported from elsewhere was used unchecked, whatever it held."""
    from zamzoo.models.plugins import ensure_attention
    first, second = tmp_path / 'venv1', tmp_path / 'venv2'
    for root in (first, second):
        (root / 'zamzoo_movedpkg').mkdir(parents=True)
        for name, text in HELPER_PACKAGE.items():
            (root / 'zamzoo_movedpkg' / name).write_text(text)
    monkeypatch.syspath_prepend(str(first))
    record = json.loads(json.dumps(load_attention('zamzoo_movedpkg.attention:Gated', name='plug_moved').record()))
    assert record['source'] == str((first / 'zamzoo_movedpkg' / 'attention.py').resolve())

    def elsewhere(path=second):  # as a new process that imports the package from `path` meets the run
        if 'plug_moved' in ATTENTIONS:
            unregister_attention('plug_moved')
        for name in [m for m in sys.modules if m.startswith('zamzoo_movedpkg')]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(sys, 'path', [p for p in sys.path if p not in (str(first), str(second))])
        monkeypatch.syspath_prepend(str(path))
    (second / 'zamzoo_movedpkg' / 'scales.py').write_text('SCALE = 3.0\n')
    elsewhere()  # the run's files still there, another installation's imported
    with pytest.raises(UsageError, match=r"came from .*venv1.*attention.py; the one registered now \(zamzoo_movedpkg"
                                         r".attention:Gated, from .*venv2.*\) holds other code: put .*venv1 first on "
                                         r"PYTHONPATH"):
        ensure_attention(record)
    (second / 'zamzoo_movedpkg' / 'scales.py').write_text(HELPER_PACKAGE['scales.py'])
    shutil.rmtree(first)
    elsewhere(tmp_path / 'nowhere')  # installed nowhere: the run's file is named
    with pytest.raises(UsageError, match=r'was read from .*venv1.*attention.py, which is gone'):
        ensure_attention(record)
    elsewhere()
    ensure_attention(record)
    assert ATTENTIONS['plug_moved'].plugin.source == str((second / 'zamzoo_movedpkg' / 'attention.py').resolve())
    (second / 'zamzoo_movedpkg' / 'maths.py').write_text('def half(x):\n    return x * 0.25\n')  # other code
    elsewhere()
    with pytest.raises(UsageError, match=r'which is gone \(the one imported now, from .*venv2.* holds other code\)'):
        ensure_attention(record)
    assert 'plug_moved' not in ATTENTIONS  # nothing registered from other code
    for name in [m for m in sys.modules if m.startswith('zamzoo_movedpkg')]:
        monkeypatch.delitem(sys.modules, name)


def test_the_same_files_registered_under_another_spec_are_said_to_be_the_same(tmp_path):
    """A copy of the run's file passed as --attn was said to hold 'other code'."""
    first, copy = tmp_path / 'mine.py', tmp_path / 'copy.py'
    first.write_text(MODULE_SOURCE)
    copy.write_text(MODULE_SOURCE)
    record = load_attention(f'{first}:Zeroing', name='plug_copy').record()
    unregister_attention('plug_copy')
    current = load_attention(f'{copy}:Zeroing', name='plug_copy').record()
    with pytest.raises(UsageError, match=re.escape(f'registered as {first}:Zeroing; the one registered now is '
                                                   f'{copy}:Zeroing (the same files)')):
        check_attention_source(record, current)
    copy.write_text(MODULE_SOURCE + '# edited\n')
    unregister_attention('plug_copy')
    current = load_attention(f'{copy}:Zeroing', name='plug_copy').record()
    with pytest.raises(UsageError, match=re.escape(f'holds other code: pass --attn {first}:Zeroing')):
        check_attention_source(record, current)
    unregister_attention('plug_copy')


def test_a_module_registered_with_other_options_than_the_run_is_refused():
    record = zamzoo.register_attention('plug_scale', Identity, scale=2.0).record()
    unregister_attention('plug_scale')
    now = zamzoo.register_attention('plug_scale', Identity, scale=3.0).record()
    with pytest.raises(UsageError, match=r"'plug_scale' was built with the options \{'scale': 2.0\}; the one "
                                         r"registered now has \{'scale': 3.0\}"):
        check_attention_source(record, now)
    check_attention_source(dict(record, options={'scale': 3.0}), now)
    check_attention_source({k: v for k, v in now.items() if k != 'options'}, dict(now, options={}))  # older record


def test_a_module_the_blocks_cannot_build_is_refused_when_registered():
    """A class without `device` / `dtype` (many papers' code) was registered, and every model of it then failed to
    build with a TypeError: an installed entry point's made `zamzoo list` a traceback for every model."""
    class NoDevice(nn.Module):
        def __init__(self, channels):
            super().__init__()

    with pytest.raises(UsageError, match=r"attention 'plug_nodev': NoDevice cannot be called as timm's blocks build "
                                         r"an attention module, .*unexpected keyword argument 'device'.*expected "
                                         r"__init__\(self, channels, ..., device=None, dtype=None\)"):
        zamzoo.register_attention('plug_nodev', NoDevice)
    assert 'plug_nodev' not in ATTENTIONS
    with pytest.raises(UsageError, match="unexpected keyword argument 'sclae'"):  # options bound too
        zamzoo.register_attention('plug_nodev', Identity, sclae=2.0)


class ReadsValues(nn.Module):
    """Branches on a value (`.item()`): trains on real tensors, cannot run on the meta device."""
    def __init__(self, channels, device=None, dtype=None):
        super().__init__()

    def forward(self, x):
        return x * 0.5 if x.abs().amax().item() > 1e6 else x * torch.sigmoid(x)


def test_a_model_whose_module_reads_values_exports(tmp_path, capsys):
    """`zamzoo export` counted MACs on a meta-device twin only: 'Tensor.item() cannot be called on meta tensors', a
    traceback, for a model that trained."""
    from safetensors.torch import save_file
    from zamzoo.bench.flops import count_macs
    from zamzoo.cli import main
    zamzoo.register_attention('plug_reads', ReadsValues)
    net = timm.create_model('mobilenet_plug_reads')
    save_file(net.state_dict(), str(tmp_path / 'w.safetensors'))
    assert main(['export', str(tmp_path / 'w.safetensors'), '--model', 'mobilenet_plug_reads', '--out',
                 str(tmp_path / 'export')]) == 0
    assert f'MACs {count_macs(net):,}' in capsys.readouterr().out
    unregister_attention('plug_reads')


@pytest.mark.parametrize('value', [(1, 2), nn.ReLU, float('nan'), {1: 2}])
def test_options_a_run_cannot_record_exactly_are_refused(value):
    with pytest.raises(UsageError, match="options .* cannot be recorded in a run's config.json as they are"):
        zamzoo.register_attention('plug_badopt', Identity, scale=value)
    assert 'plug_badopt' not in ATTENTIONS


HELPER_PACKAGE = {
    '__init__.py': 'OFFSET = 0.0\n',
    'attention.py': 'from torch import nn\n\nfrom . import OFFSET, scales\nfrom .consts import BIAS\n'
                    'from .gates import gate\n\n\n'
                    'class Gated(nn.Module):\n    def __init__(self, channels, device=None, dtype=None):\n'
                    '        super().__init__()\n\n    def forward(self, x):\n'
                    '        return gate(x) * scales.SCALE + BIAS + OFFSET\n',
    'consts.py': 'BIAS = 0.0\n',
    'gates.py': 'from .maths import half\n\n\ndef gate(x):\n    return half(x)\n',
    'maths.py': 'def half(x):\n    return x * 0.5\n',
    'scales.py': 'SCALE = 2.0\n',
    'unused.py': 'X = 1\n',
}


def test_an_edit_to_a_file_the_module_imports_is_refused_as_an_edit_of_its_own(tmp_path, monkeypatch):
    """Only the class's own file was hashed: an edited helper module trained the next seeds with other code."""
    package = tmp_path / 'zamzoo_helperpkg'
    package.mkdir()
    for name, text in HELPER_PACKAGE.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = load_attention('zamzoo_helperpkg.attention:Gated', name='plug_helpers')
    files = {name: str((package / name).resolve())
             for name in ('__init__.py', 'consts.py', 'gates.py', 'maths.py', 'scales.py')}
    assert r.imports == {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in files.values()}
    assert r.record()['imports'] == r.imports  # through a function's module, a module, and a helper's own import;
    # a value imported from a module (consts.BIAS) or from the package (OFFSET), whose files it did not record
    record = r.record()
    check_attention_source(record, record)

    (package / 'maths.py').write_text('def half(x):\n    return x * 0.25\n')
    with pytest.raises(UsageError, match=f"{files['maths.py']}, which the attention module's source .*attention.py "
                                         f'imports, changed since the run started'):
        check_attention_source(record)
    (package / 'maths.py').unlink()
    with pytest.raises(UsageError, match=f"{files['maths.py']}, which .* imports, is gone"):
        check_attention_source(record)
    (package / 'maths.py').write_text(HELPER_PACKAGE['maths.py'])
    (package / 'unused.py').write_text('X = 2\n')  # not imported by the module: not its code
    check_attention_source(record)

    from zamzoo.train import TrainConfig
    from zamzoo.zoo.plan import PlannedRun, settings_conflict
    config = TrainConfig(model='mobilenet_plug_helpers', data=str(tmp_path), dataset='folder',
                         out=str(tmp_path / 'run'))
    run = PlannedRun(config, recipe='finetune', epochs=1)
    (tmp_path / 'run').mkdir()
    other = dict(record, imports=dict(record['imports'], **{files['maths.py']: '0' * 64}))
    (tmp_path / 'run' / 'config.json').write_text(json.dumps(dict(run.settings(), attention_module=other)))
    assert 'finished with attention module imports={' in settings_conflict(run, 'finished')

    unregister_attention('plug_helpers')  # registered again in this process after a helper's edit: Python kept the old
    (package / 'scales.py').write_text('SCALE = 3.0\n')
    with pytest.raises(UsageError, match=f"{files['scales.py']}, which the attention module imports, changed since "
                                         f'this process imported it'):
        load_attention('zamzoo_helperpkg.attention:Gated', name='plug_helpers')
    for name in [m for m in sys.modules if m.startswith('zamzoo_helperpkg')]:
        monkeypatch.delitem(sys.modules, name)


def test_what_a_module_imports_does_not_depend_on_what_else_the_process_imported(tmp_path, monkeypatch):
    """A package's namespace holds every submodule the process imported: a sibling module imported by the user's
    script (not by the attention) was recorded, and the run's worker, a new process, recorded other files, so the
    plan refused its own finished run. A file starting with a BOM (or a coding line) lost its import statements."""
    package = tmp_path / 'zamzoo_sibpkg'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'other.py').write_text('X = 1\n')
    (package / 'consts.py').write_text('BIAS = 0.0\n')
    (package / 'attn.py').write_bytes(b'\xef\xbb\xbf' + HELPER_PACKAGE['attention.py'].replace(
        'from . import OFFSET, scales\nfrom .consts import BIAS\nfrom .gates import gate\n',
        'from .consts import BIAS\n').replace('gate(x) * scales.SCALE + BIAS + OFFSET', 'x + BIAS').encode())
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module('zamzoo_sibpkg.other')
    r = load_attention('zamzoo_sibpkg.attn:Gated', name='plug_sibling')
    assert sorted(Path(p).name for p in r.imports) == ['__init__.py', 'consts.py']
    unregister_attention('plug_sibling')
    # a module a function imports when called (a lazy import) or a type checker's (never run): in the planning
    # process when the user's script imported it, not in the worker's; a class body's import runs on import
    (package / 'lazy.py').write_text(
        'from typing import TYPE_CHECKING\nfrom torch import nn\nif TYPE_CHECKING:\n    from . import other\n\n\n'
        'class Lazy(nn.Module):\n    from . import consts\n\n    def __init__(self, channels, device=None, '
        'dtype=None):\n        super().__init__()\n\n    def forward(self, x):\n'
        '        from .other import X\n        return x * X\n')
    r = load_attention('zamzoo_sibpkg.lazy:Lazy', name='plug_lazy')
    assert sorted(Path(p).name for p in r.imports) == ['__init__.py', 'consts.py']
    unregister_attention('plug_lazy')
    for name in [m for m in sys.modules if m.startswith('zamzoo_sibpkg')]:
        monkeypatch.delitem(sys.modules, name)


def test_file_spec_imports_and_registers(tmp_path):
    path = tmp_path / 'my_module.py'
    path.write_text(MODULE_SOURCE)
    r = load_attention(f'{path}:Zeroing')
    assert (r.name, r.source, r.sha256) == ('zeroing', str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    assert r.spec == f'{path}:Zeroing' and r.models['mobilenet'] == 'mobilenet_zeroing'
    model = timm.create_model('mobilenet_zeroing', num_classes=3).eval()
    features = model.forward_features(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 1024, 4, 4) and not features.any()  # every block's output zeroed
    assert load_attention(f'{path}:Zeroing') == r  # the same file again: the same class, a no-op
    assert load_attention(f'{path}:Zeroing', name='plug_zero2').models['resnet18'] == 'resnet18_plug_zero2'


@pytest.mark.parametrize('spec, match', [
    ('no_colon_here', "expected 'pkg.module:Class'"),
    ('missing_dir/nothing.py:Zeroing', 'is not a file'),
    ('{path}:NoSuchClass', "has no 'NoSuchClass'"),
    ('zamzoo_no_such_package.mod:Class', "cannot import 'zamzoo_no_such_package.mod'"),
    ('{broken}:X', 'importing .*broken.py failed: ZeroDivisionError'),
    ('{exits}:X', r'importing .*exits.py failed: SystemExit\(3\): it exits when imported'),  # zamzoo exited with 3
])
def test_bad_spec_is_one_clear_error(tmp_path, spec, match):
    path, broken, exits = tmp_path / 'ok.py', tmp_path / 'broken.py', tmp_path / 'exits.py'
    path.write_text(MODULE_SOURCE)
    broken.write_text('1 / 0\n')
    exits.write_text('import sys\nsys.exit(3)\n')
    with pytest.raises(UsageError, match=match):
        load_attention(spec.format(path=path, broken=broken, exits=exits))


def test_a_module_path_edited_after_its_import_is_refused_not_recorded_as_new(tmp_path, monkeypatch):
    """Python keeps a module it imported: re-registering an edited 'pkg.module:Class' got the old class, recorded
    with the edited file's sha256."""
    import sys
    (tmp_path / 'zamzoo_editmod.py').write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'zamzoo_editmod', raising=False)
    first = load_attention('zamzoo_editmod:Zeroing', name='plug_edit')
    unregister_attention('plug_edit')
    (tmp_path / 'zamzoo_editmod.py').write_text(MODULE_SOURCE + '# edited\n')
    with pytest.raises(UsageError, match=r"'zamzoo_editmod': .*zamzoo_editmod.py changed since this process imported "
                                         r'it, .* start a new process'):
        load_attention('zamzoo_editmod:Zeroing', name='plug_edit')
    assert first.sha256 == hashlib.sha256(MODULE_SOURCE.encode()).hexdigest()
    monkeypatch.delitem(sys.modules, 'zamzoo_editmod')


def test_entry_points_register_on_import_and_a_broken_one_only_warns(tmp_path):
    (tmp_path / 'plugpkg').mkdir()
    (tmp_path / 'plugpkg' / '__init__.py').write_text(MODULE_SOURCE)
    info = tmp_path / 'plugpkg-0.1.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: plugpkg\nVersion: 0.1\n')
    (tmp_path / 'plugexit.py').write_text('import sys\nsys.exit(3)\n')  # `import zamzoo` exited with 3
    (info / 'entry_points.txt').write_text(
        '[zamzoo.attention]\nepzero = plugpkg:Zeroing\nepbroken = plugpkg:NoSuchClass\nepexit = plugexit:X\n')
    code = ('import logging; logging.basicConfig()\n'
            'import timm, torch, zamzoo\n'
            'm = timm.create_model("resnet18_epzero", num_classes=4)\n'
            'print(m(torch.randn(1, 3, 32, 32)).shape, "epbroken" in zamzoo.list_attn())\n'
            'print(zamzoo.models.ATTENTIONS["epzero"].plugin.spec)')
    r = _python(code, tmp_path, extra_path=[tmp_path])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split('\n')[:2] == ['torch.Size([1, 4]) False', 'plugpkg:Zeroing']
    assert 'WARNING:zamzoo' in r.stderr and 'epbroken' in r.stderr and 'plugpkg:NoSuchClass' in r.stderr
    assert "epexit = 'plugexit:X'" in r.stderr and 'SystemExit(3): it exits when imported' in r.stderr


def test_run_records_its_module_and_resume_refuses_an_edited_source(tmp_path, capsys):
    module = tmp_path / 'attn_mod.py'
    module.write_text(MODULE_SOURCE)
    data, out = _image_folder(tmp_path / 'images'), tmp_path / 'run'
    args = ['train', '--attn', f'{module}:Zeroing', '--name', 'plug_run', '--model', 'mobilenet_plug_run',
            '--data', str(data), '--dataset', 'folder', '--holdout', '0.5', '--epochs', '1', '--device', 'cpu',
            '--batch-size', '8', '--out', str(out)]
    assert main(args) == 0
    recorded = json.loads((out / 'config.json').read_text())['attention_module']
    assert recorded == {'name': 'plug_run', 'spec': f'{module}:Zeroing', 'source': str(module),
                        'sha256': hashlib.sha256(module.read_bytes()).hexdigest(), 'options': {}, 'imports': {}}
    check_attention_source(recorded)  # unchanged: passes

    module.write_text(MODULE_SOURCE + '# edited\n')
    with pytest.raises(UsageError, match=f'{module} changed since the run started'):
        check_attention_source(recorded)
    r = _python(['-m', 'zamzoo', *args, '--resume'], tmp_path)  # a new process imports the edited file
    assert r.returncode == 2 and f"source {module} changed since the run started" in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr


def test_zoo_worker_imports_the_module_from_the_config(tmp_path, monkeypatch):
    from zamzoo.train import TrainConfig
    module = tmp_path / 'worker_mod.py'
    module.write_text(MODULE_SOURCE)
    out = tmp_path / 'run'
    config = TrainConfig(model='mobilenet_wzero', data=str(_image_folder(tmp_path / 'images')), dataset='folder',
                         holdout=0.5, epochs=1, batch_size=8, device='cpu', out=str(out),
                         attn=f'{module}:Zeroing', attn_name='wzero')
    r = _python(['-m', 'zamzoo.zoo.worker', json.dumps(config.to_dict())], tmp_path)  # as zoo.local spawns it

    relative = TrainConfig(**dict(config.to_dict(), attn='worker_mod.py:Zeroing'))
    monkeypatch.chdir(tmp_path)
    assert relative.validate().attn == f'{module}:Zeroing'  # a file spec becomes absolute: workers run anywhere
    assert r.returncode == 0 and f'{out}: trained' in r.stdout, r.stderr
    assert json.loads((out / 'config.json').read_text())['attention_module']['source'] == str(module)

    # the plan of a later `zoo run` with the module edited: the finished run is another module's, not done
    from zamzoo.zoo.plan import PlannedRun, settings_conflict
    old = load_attention(f'{module}:Zeroing', name='wzero').sha256
    run = PlannedRun(config.validate(), recipe='zam', epochs=1)
    assert settings_conflict(run, 'finished') is None
    unregister_attention('wzero')
    module.write_text(MODULE_SOURCE + '# edited\n')
    new = load_attention(f'{module}:Zeroing', name='wzero').sha256
    assert (f"finished with attention module='sha256 {old[:12]} of /" in settings_conflict(run, 'finished')
            and f"the plan has attention module='sha256 {new[:12]}'" in settings_conflict(run, 'finished'))
    unregister_attention('wzero')
    module.write_text(MODULE_SOURCE)
    load_attention(f'{module}:Zeroing', name='wzero', options={'scale': 0.5})
    assert "attention options={}, the plan has attention options={'scale': 0.5}" in settings_conflict(run, 'finished')


def test_a_sweep_of_a_module_registered_here_registers_it_with_its_options_in_each_worker(tmp_path):
    """A zoo worker is a new process: the models of a module registered with zamzoo.register_attention or
    load_attention were unknown there ('unknown model'), and the options bound to it were not passed."""
    from zamzoo.zoo import plan_sweep, run_sweep
    module = tmp_path / 'sweep_mod.py'
    module.write_text(MODULE_SOURCE)
    load_attention(f'{module}:Scaled', name='wscaled', options={'scale': 0.5})
    out = tmp_path / 'runs'
    [run] = plan_sweep(['mobilenet_wscaled'], ['folder'], [0], _image_folder(tmp_path / 'images'), out,
                       holdout=0.5, epochs=1, batch_size=8, device='cpu')
    assert (run.config.attn, run.config.attn_name, run.config.attn_options) == (f'{module}:Scaled', 'wscaled',
                                                                                {'scale': 0.5})
    summary = run_sweep([run], out, executor='local')
    assert summary['ended']['done'] == 1, summary['failed']
    recorded = json.loads((run.folder / 'config.json').read_text())  # written by the worker, from its registration
    assert recorded['attention_module']['options'] == {'scale': 0.5} and recorded['args']['attn_options'] == {
        'scale': 0.5}

    in_main = type('InMain', (Identity,), {'__module__': '__main__'})  # a class of a notebook or a script
    zamzoo.register_attention('wmain', in_main)
    with pytest.raises(UsageError, match='mobilenet_wmain: its attention module __main__:InMain is defined in '
                                         '__main__ .* cannot import; put the class in a file'):
        plan_sweep(['mobilenet_wmain'], ['folder'], [0], tmp_path / 'images', out, holdout=0.5)


def test_a_sweep_of_a_module_only_this_process_can_import_is_refused_when_planned(tmp_path, monkeypatch):
    """A module imported from a folder on this process's sys.path only (the script's own folder, a sys.path.insert)
    was planned, then every worker (a new process) failed to import it. With its folder on PYTHONPATH it is found."""
    from zamzoo.zoo import plan_sweep
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'far_gate.py').write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / 'mine'))
    load_attention('far_gate:Scaled', name='wfar')
    args = (['mobilenet_wfar'], ['folder'], [0], tmp_path / 'images', tmp_path / 'runs')
    with pytest.raises(UsageError, match=rf"mobilenet_wfar: its attention module far_gate:Scaled was imported here "
                                         rf"from {tmp_path}/mine/far_gate.py, but a new process started in .* cannot "
                                         rf"import 'far_gate': add {tmp_path}/mine to PYTHONPATH"):
        plan_sweep(*args, holdout=0.5)
    monkeypatch.setenv('PYTHONPATH', str(tmp_path / 'mine'))
    [run] = plan_sweep(*args, holdout=0.5)
    assert run.config.attn == 'far_gate:Scaled'


def test_generated_prose_follows_the_table_and_leaves_plugins_out(monkeypatch):
    from zamzoo.bench.tables import citations_bibtex, citations_list, zoo_summary
    from zamzoo.models._zoo import Attention, Paper
    zamzoo.register_attention('plug_prose', Identity)  # run-time modules are not the zoo's
    assert 'plug_prose' not in zoo_summary() and f'{len(ZOO) - len(BACKBONES)} image classifiers' in zoo_summary()

    paper = Paper(id='arXiv:0000.00000', title='A New Module', url='https://example.org/new',
                  bibtex='@misc{new2026,\n  title={A New Module}\n}')
    monkeypatch.setitem(ATTENTIONS, 'newrow', Attention(
        name='newrow', layer='se', description='a new row', paper=paper))  # one table row, nothing else
    own = len(ATTENTIONS) - 1
    assert f'{len(BACKBONES) * own} image classifiers' in zoo_summary() and f'{own} attention settings' in zoo_summary()
    assert '`newrow`' in zoo_summary() and '- A New Module: https://example.org/new' in citations_list()
    assert '@misc{new2026,' in citations_bibtex()


def test_compare_of_a_module_named_by_its_registered_name_is_checked_as_its_spec(tmp_path):
    """`compare --attn NAME` of a registered module (an entry point's) had no record: runs of an edited source were
    mixed into its report unnoticed."""
    from zamzoo.compare.runs import candidate_attention
    path = tmp_path / 'named_mod.py'
    path.write_text(MODULE_SOURCE)
    load_attention(f'{path}:Zeroing', name='plug_byname')
    candidate = candidate_attention('plug_byname')
    assert (candidate.name, candidate.module, candidate.record['source']) == ('plug_byname', f'{path}:Zeroing',
                                                                              str(path))
    with pytest.raises(UsageError, match="--name: 'plug_byname' is already the name of a registered module"):
        candidate_attention('plug_byname', 'other')
    # an entry point's runs are planned without config.attn (every process registers it): they are its runs still
    from zamzoo.compare.runs import check_sources
    from zamzoo.train import TrainConfig
    from zamzoo.zoo.plan import PlannedRun
    folder = tmp_path / 'runs' / 'mobilenet_plug_byname-cifar10-zam-s0'
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps({'attention_module': dict(candidate.record, sha256='0' * 64)}))
    run = PlannedRun(TrainConfig(model='mobilenet_plug_byname', data=str(tmp_path), out=str(folder)), 'zam', 200)
    with pytest.raises(UsageError, match=f'{path} changed since the run started'):
        check_sources(candidate, [run])
