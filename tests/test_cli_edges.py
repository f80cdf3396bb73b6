"""What a user meets at the edges of the command line: one line and exit 2 instead of a traceback, nothing left
half-made, a closed pipe ending the command quietly, messages naming what is missing."""
import gc
import json
import os
import signal
import subprocess
import sys
import warnings

import pytest
import timm

from zamzoo.cli import main
from zamzoo.errors import UsageError, WeightsError


def test_a_spec_naming_something_that_is_not_a_class_is_one_line(tmp_path, capsys):
    from zamzoo.models.plugins import load_attention

    (tmp_path / 'bad.py').write_text('raise_me = 1\n')
    with pytest.raises(UsageError, match='expected a module class'):
        load_attention(f'{tmp_path / "bad.py"}:raise_me')
    assert main(['compare', '--attn', f'{tmp_path / "bad.py"}:raise_me', '--baselines', 'plain', '--backbones',
                 'mobilenet', '--seeds', '0', '--dataset', 'folder', '--data', str(tmp_path), '--out',
                 str(tmp_path / 'runs'), '--check-only']) == 2
    err = capsys.readouterr().err
    assert 'expected a module class' in err and 'Traceback' not in err


def test_quickstart_leaves_nothing_behind_when_it_fails(tmp_path, capsys, monkeypatch):
    out = tmp_path / 'qs'
    assert main(['quickstart', '--model', 'nosuch', '--out', str(out)]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err and not out.exists()
    assert main(['quickstart', '--model', 'resnet18', '--out', str(out)]) == 2  # timm's, not the zoo's: it trained,
    assert "'resnet18' is not a zamzoo model; quickstart trains and exports a zoo model" in capsys.readouterr().err
    assert not out.exists()                                            # then its export refused it

    import zamzoo.quickstart as quickstart

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def killed(*args, **kwargs):  # `kill`, `timeout`, a container stopping
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(quickstart, 'train', interrupted)  # after the data set was written
    assert main(['quickstart', '--out', str(out), '--train-images', '9', '--val-images', '10']) == 2
    assert 'at least 10 each' in capsys.readouterr().err and not out.exists()
    assert main(['quickstart', '--out', str(out), '--train-images', '10', '--val-images', '10']) == 130
    assert not out.exists()  # a second quickstart into the same --out can start
    monkeypatch.setattr(quickstart, 'train', killed)
    previous = signal.getsignal(signal.SIGTERM)
    assert main(['quickstart', '--out', str(out), '--train-images', '10', '--val-images', '10']) == 130
    assert not out.exists() and signal.getsignal(signal.SIGTERM) is previous


def test_a_closed_pipe_ends_the_command_quietly():
    code = ('import sys, zamzoo.cli as cli, zamzoo.publish.commands as commands\n'
            'def endless(args):\n'
            '    while True:\n'
            '        print("x" * 100)\n'
            'commands._list = endless\n'
            'sys.exit(cli.main(["list"]))\n')
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `zamzoo list | head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == '', err  # 128 + SIGPIPE, as a shell reports a piped tool


def test_compare_reads_the_data_before_the_contract_check(tmp_path, capsys):
    assert main(['compare', '--attn', 'zam', '--baselines', 'plain', '--backbones', 'mobilenet', '--seeds', '0',
                 '--dataset', 'folder', '--data', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'runs')]) == 2
    captured = capsys.readouterr()
    assert 'nothing' in captured.err and 'contract' not in captured.out.lower(), captured
    assert not (tmp_path / 'runs').exists()


def test_compare_check_only_needs_no_data_and_a_comparison_says_it_needs_some(tmp_path, capsys, light_contract):
    """--check-only (the contract check alone) refused to start without --data, which it never reads."""
    args = ['compare', '--attn', 'zam', '--baselines', 'plain', '--backbones', 'mobilenet', '--out',
            str(tmp_path / 'runs')]
    assert main([*args, '--check-only']) == 0
    assert 'zam keeps the contract' in capsys.readouterr().out
    assert main(args) == 2
    captured = capsys.readouterr()
    assert '--data is required to train the runs' in captured.err and 'contract' not in captured.out
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('start', [['--pretrained'], ['--init', 'resnet18_zam']])
def test_compare_trains_every_arm_from_its_seeds_own_initialisation(tmp_path, capsys, start):
    """--pretrained was accepted: every arm's seeds started from one published checkpoint (a new module has none,
    so its runs all failed), and the report compared checkpoints, not modules trained as stated."""
    with pytest.raises(SystemExit) as e:
        main(['compare', '--attn', 'zam', '--data', str(tmp_path), '--out', str(tmp_path / 'runs'), *start])
    assert e.value.code == 2 and f'unrecognized arguments: {" ".join(start)}' in capsys.readouterr().err
    assert not (tmp_path / 'runs').exists()


def test_a_missing_local_weights_file_is_named():
    with pytest.raises(WeightsError, match='no weights file at .*does-not-exist'):
        timm.create_model('mobilenet_zam', pretrained=True,
                          pretrained_cfg_overlay=dict(file='/nonexistent/does-not-exist.safetensors'))


def test_a_missing_onnxscript_is_named_with_the_extra(monkeypatch):
    from zamzoo.bench.onnx import require_onnx
    from zamzoo.errors import ZamzooError

    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # import onnxscript -> ImportError
    with pytest.raises(ZamzooError, match=r"onnxscript is missing.*zamzoo\[onnx\]"):
        require_onnx()
    monkeypatch.setattr(sys, 'version_info', (3, 10, 13, 'final', 0))  # the extra cannot install there
    with pytest.raises(ZamzooError, match=r"zamzoo\[onnx\]' on Python >= 3.11 \(.*no build for Python 3.10\)"):
        require_onnx()


def test_bench_models_under_onnxruntime_without_its_extra_says_so_before_counting_a_model(monkeypatch, capsys):
    """It built and counted the models, then stopped at the first export."""
    import zamzoo.bench.models as bench_models

    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    monkeypatch.setattr(bench_models, '_build', lambda *a, **k: pytest.fail('a model was built'))
    assert main(['bench', 'models', '--models', 'mobilenet_plain', '--runtime', 'onnxruntime', '--device', 'cpu',
                 '--out', 'nowhere']) == 2
    assert "onnxruntime is missing): pip install 'zamzoo[onnx]'" in capsys.readouterr().err


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exit_:
        main(['--version'])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"zamzoo {version('zamzoo')}"


_COLLECTIONS_DURING_IMPORT = """
import gc, json, sys
seen = []
gc.callbacks.append(lambda phase, info: phase == 'start' and seen.append(info['generation']))
import zamzoo
print(json.dumps([seen, gc.isenabled(), 'torch' in sys.modules, len(gc.get_objects(2)), len(gc.get_objects())]))
"""


def test_importing_zamzoo_runs_one_collection_and_leaves_the_collector_as_it_was():
    """zamzoo's imports (torch's, torchvision's, timm's) run with the collector paused, then one collection of the
    young and middle generations: before, six full collections walked their objects (and 76 of the middle generation,
    841 young ones). What is left alive is in the oldest generation. A caller's collector that is off stays off, and
    nothing is collected."""
    from zamzoo._process import collections_paused

    proc = subprocess.run([sys.executable, '-c', _COLLECTIONS_DURING_IMPORT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    seen, enabled, torch_imported, oldest, tracked = json.loads(proc.stdout)
    assert seen.count(1) == 1 and 2 not in seen and len(seen) <= 3 and enabled and torch_imported, seen
    assert oldest > 0.99 * tracked and tracked > 300_000, (oldest, tracked)
    seen = []
    gc.callbacks.append(lambda phase, info: phase == 'start' and seen.append(info['generation']))
    gc.disable()
    try:
        with collections_paused():
            pass
        assert not gc.isenabled() and seen == []
    finally:
        gc.enable()
        gc.callbacks.pop()


def test_the_command_runs_main_with_the_imports_frozen_out_of_the_collector(monkeypatch, capsys):
    """The `zamzoo` executable and `python -m zamzoo` run `console_main`, which freezes the objects alive (the
    imports') before `main` runs; `main`, which callers run inside processes of their own, freezes nothing."""
    import runpy
    from importlib.metadata import entry_points

    import zamzoo.cli as cli

    [script] = entry_points(group='console_scripts', name='zamzoo')
    assert script.value == 'zamzoo.cli:console_main'
    monkeypatch.setattr(warnings, 'showwarning', warnings.showwarning)  # console_main sets it for its process
    before = gc.get_freeze_count()
    with pytest.raises(SystemExit) as exit_:
        main(['--version'])
    assert exit_.value.code == 0 and gc.get_freeze_count() == before
    seen = []
    monkeypatch.setattr(cli, 'main', lambda: seen.append(gc.get_freeze_count()) or 7)
    try:
        assert cli.console_main() == 7
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module('zamzoo', run_name='__main__')
    finally:
        gc.unfreeze()  # this test process's objects back to the collector
    assert exit_.value.code == 7 and len(seen) == 2 and min(seen) > before


def test_the_command_shows_zamzoos_own_warnings_as_one_line(monkeypatch):
    """A warning zamzoo gives (an image folder's skipped files) was printed as Python shows it: the source file,
    line and code line of zamzoo, then the message; other libraries' warnings stay as Python shows them."""
    import io
    import zamzoo.cli as cli
    import zamzoo.data.folder

    monkeypatch.setattr(warnings, 'showwarning', warnings.showwarning)
    monkeypatch.setattr(cli, 'main', lambda: 0)
    assert cli.console_main() == 0 and warnings.showwarning is cli._show_warning
    gc.unfreeze()
    python_shows = []
    monkeypatch.setattr(cli, '_show_any_warning', lambda *a: python_shows.append(a))
    ours = io.StringIO()
    warnings.showwarning('2 file(s) skipped', UserWarning, zamzoo.data.folder.__file__, 40, ours)
    warnings.showwarning('deprecated', FutureWarning, timm.__file__, 7)
    assert ours.getvalue() == 'zamzoo: warning: 2 file(s) skipped\n'
    assert python_shows == [('deprecated', FutureWarning, timm.__file__, 7, None, None)]


@pytest.mark.filterwarnings('ignore:.*found in sys.modules:RuntimeWarning')  # runpy: the worker is imported already
def test_a_sweeps_worker_and_its_slurm_task_freeze_the_imports_before_anything_else(monkeypatch):
    """The other processes zamzoo owns: `python -m zamzoo.zoo.worker` (the local executor's) and a SLURM array task
    (`SweepTask.__call__`) freeze first."""
    import runpy

    import zamzoo._process as process
    from zamzoo.zoo import slurm

    class Frozen(Exception):
        pass

    def freeze():
        raise Frozen
    monkeypatch.setattr(process, 'freeze_imports', freeze)  # what the worker's fresh run imports
    monkeypatch.setattr(slurm, 'freeze_imports', freeze)
    with pytest.raises(Frozen):
        runpy.run_module('zamzoo.zoo.worker', run_name='__main__')
    with pytest.raises(Frozen):
        slurm.SweepTask()(None)


@pytest.mark.parametrize('argv,usage', [
    (['train', '--model', 'resnet18_zam', '--data', 'd', '--learning-rate', '0.1'], 'zamzoo train'),
    (['zoo', 'run', '--models', 'resnet18_zam', '--data', 'd', '--bogus'], 'zamzoo zoo run')])
def test_an_unknown_argument_is_reported_with_its_commands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f'usage: {usage} ') and 'unrecognized arguments: --' in err
