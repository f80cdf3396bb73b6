"""Review fixes of the cost work: plugins and seed FLOPs, baseline costs, model selection, ONNX folding."""
import pytest
import timm
from torch import nn

import zamzoo
from zamzoo.bench.flops import seed_flops

from test_compare_cost import Identity

pytestmark = pytest.mark.usefixtures('single_thread', 'forget_registrations')


def test_a_plugin_of_a_zoo_class_leaves_the_zoo_models_seed_flops_alone():
    model = timm.create_model('mobilenet_se')
    before = seed_flops(model)
    zamzoo.register_attention('se8', zamzoo.layers.SE, rd_divisor=8)
    assert seed_flops(model) == before == 182_416_936


def test_every_arm_of_a_backbone_is_timed_in_the_same_rounds_as_one_plain(monkeypatch):
    from zamzoo.compare import contract

    calls = []

    def fake_latency(models, size, batch, **kwargs):
        calls.append(sorted(models))
        per_call = {'plain': 1.0, 'se': 1.5, 'ident': 2.0}
        return {name: [per_call[name] * r for r in (1, 2, 3)] for name in models}  # rounds of varying load

    monkeypatch.setattr(contract, 'interleaved_latency', fake_latency)
    costs = contract.arm_costs(Identity, 'ident', ['mobilenet'], ('plain', 'se'))
    assert calls == [['ident', 'plain', 'se']]  # one session per backbone, plain timed once
    ratios = {arm: (c['cpu_latency_ratio'], c['cpu_latency_iqr']) for arm, c in costs['mobilenet'].items()}
    assert ratios == {'plain': (1.0, [1.0, 1.0]), 'se': (1.5, [1.5, 1.5]), 'ident': (2.0, [2.0, 2.0])}



def test_a_failed_plugin_refuses_only_patterns_naming_its_models(monkeypatch, caplog, capsys):
    from zamzoo.bench import models as bench
    from zamzoo.errors import UsageError
    from zamzoo.models import plugins

    monkeypatch.setitem(plugins._FAILED_ENTRY_POINTS, 'rrfixbroken', 'pkg.mod:Broken: ImportError: no pkg')
    with caplog.at_level('WARNING', logger='zamzoo'):
        names = bench.select_models()  # the default '*': a warning, the other models
    assert 'mobilenet_se' in names and 'rrfixbroken' in caplog.text and 'ImportError: no pkg' in caplog.text
    assert 'mobilenet_se' in bench.select_models(['mobilenet_*'])
    with pytest.raises(UsageError, match='rrfixbroken.*ImportError: no pkg'):
        bench.select_models(['mobilenet_rrfixbroken'])
    with pytest.raises(UsageError, match='no zamzoo model matches'):
        bench.select_models(['*_rrfixbroken'])  # a wildcard that matches nothing at all
    # train, zoo and compare (check_model_name) and list say why too: they said 'unknown model', 'no model matches'
    from zamzoo.cli import main
    from zamzoo.train.build import check_model_name
    with pytest.raises(UsageError, match=r"unknown model 'mobilenet_rrfixbroken': the attention entry point\(s\) "
                                         r"rrfixbroken \(pkg.mod:Broken: ImportError: no pkg\) could not be registered"):
        check_model_name('mobilenet_rrfixbroken')
    with pytest.raises(UsageError, match=r"unknown model 'mobilenet_rrfixbrokn'; did you mean"):
        check_model_name('mobilenet_rrfixbrokn')  # a typo: the close names, as before
    assert main(['list', 'resnet18_rrfixbroken']) == 1
    assert "'resnet18_rrfixbroken': the attention entry point(s) rrfixbroken (pkg.mod:Broken: ImportError: no pkg)" \
        in capsys.readouterr().err


def test_a_failed_entry_point_registered_later_is_no_longer_failed(monkeypatch):
    from zamzoo.bench import models as bench
    from zamzoo.models import plugins

    monkeypatch.setitem(plugins._FAILED_ENTRY_POINTS, 'rrfixlate', 'pkg.mod:Late: ImportError: no pkg')
    zamzoo.register_attention('rrfixlate', zamzoo.layers.SE, rd_divisor=8)
    assert 'rrfixlate' not in plugins.failed_entry_points()
    assert bench.select_models(['mobilenet_rrfixlate']) == ['mobilenet_rrfixlate']


def test_a_constant_folding_failure_is_an_onnx_export_error_and_leaves_no_file(monkeypatch, tmp_path):
    pytest.importorskip('onnxscript')
    from zamzoo.bench import onnx as bench_onnx

    def broken_folding(path):
        raise RuntimeError('folding broke')

    monkeypatch.setattr(bench_onnx, '_fold_constants', broken_folding)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(bench_onnx.OnnxExportError, match='constant folding.*RuntimeError: folding broke'):
        bench_onnx.export_onnx(model, tmp_path / 'm.onnx', (3, 8, 8))
    assert not list(tmp_path.iterdir())
