"""The reliability pass (issue 14): nothing lost, nothing silently wrong, no code from data, one line per user error.

Each test reproduces a row of the issue's table as a hostile or clumsy user would, on tiny data."""
import dataclasses
import errno
import json
import math
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zamzoo import _io, _paths
from zamzoo.cli import main
from zamzoo.data.cifar import cifar_dataset
from zamzoo.errors import DataError, NonFiniteError, OutputError, UsageError, WeightsError
from zamzoo.publish import export_run
from zamzoo.publish.export import ExportError, write_checksums
from zamzoo.publish.push import InvalidExportError, push_folder, validate_export
from zamzoo.train import TrainConfig, lock_run_folder, train
from zamzoo.train.checkpoint import write_checkpoint
from zamzoo.train.loop import train_one_epoch

REPO = Path(__file__).resolve().parent.parent
TINY = 'test_resnet'            # timm's 0.38M-param test ResNet
ZOO_MODEL = 'mobilenet_zamr'    # a small zoo model, for exports


pytestmark = pytest.mark.usefixtures('single_thread')


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
    return env


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def _one_line_error(rc, err, *expected):
    assert rc == 2, err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A bare mobilenet_zamr checkpoint (10 classes) in runs/ next to a sibling file, and an export of it."""
    root = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    import timm
    net = timm.create_model(ZOO_MODEL, num_classes=10)
    (root / 'runs').mkdir()
    path = root / 'runs' / 'model.safetensors'
    save_file(net.state_dict(), str(path))
    (root / 'runs' / 'notes.txt').write_text('mine')
    export_run([path], root / 'export', model=ZOO_MODEL, tag='cifar10')
    return path, root / 'export'


def _export(src, out, **kw):
    return export_run([src], out, model=ZOO_MODEL, tag='cifar10', **kw)


# ------------------------------------------------------------------ row 1: never delete what we did not write
def test_export_force_replaces_only_an_earlier_export(checkpoint, tmp_path, monkeypatch):
    src, exported = checkpoint
    runs = src.parent
    with pytest.raises(OutputError, match='holds the input'):               # --out a parent of the source
        _export(src, runs, overwrite=True)
    assert src.is_file() and (runs / 'notes.txt').read_text() == 'mine'
    plain = tmp_path / 'plain.txt'
    plain.write_text('keep me')
    with pytest.raises(OutputError, match='is a file'):                     # --out a plain file
        _export(src, plain, overwrite=True)
    assert plain.read_text() == 'keep me'
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'thesis.tex').write_text('years of work')
    with pytest.raises(OutputError, match='not an earlier export'):         # a folder we did not write
        _export(src, foreign, overwrite=True)
    assert (foreign / 'thesis.tex').read_text() == 'years of work'
    monkeypatch.chdir(foreign)
    with pytest.raises(OutputError, match='working directory'):
        _export(src, tmp_path, overwrite=True)
    monkeypatch.chdir(tmp_path)

    again = tmp_path / 'again'
    shutil.copytree(exported, again)
    with pytest.raises(ExportError, match='already exists'):
        _export(src, again)
    r = _export(src, again, overwrite=True)                                 # an earlier export: replaced
    assert r.path == again and sorted(p.name for p in again.iterdir()) == sorted(p.name for p in exported.iterdir())


def test_cli_export_into_its_own_runs_folder_is_one_line(checkpoint, capsys):
    src, _ = checkpoint
    rc, err = _cli(capsys, 'export', src, '--model', ZOO_MODEL, '--tag', 'cifar10', '--out', src.parent, '--force')
    _one_line_error(rc, err, 'refusing to replace')
    assert src.is_file()


# ------------------------------------------------------------------ row 2: one writer per run folder (CLI)
def test_two_cli_trainers_on_one_run_folder(tiny_cifar, tmp_path):
    """Started together: one run owns the folder, the other exits 2 with one line (busy, or the folder already holds
    a run if it came late); the folder holds one run's config, checkpoint and weights, never a mix."""
    from zamzoo.train.checkpoint import load_checkpoint
    out = tmp_path / 'dup'
    cmd = [sys.executable, '-m', 'zamzoo', 'train', '--model', TINY, '--data', str(tiny_cifar), '--recipe', 'zam',
           '--epochs', '2', '--batch-size', '32', '--eval-batch-size', '32', '--out', str(out), '--seed']
    procs = [subprocess.Popen(cmd + [str(seed)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for seed in (1, 2)]
    rcs = [p.wait(timeout=300) for p in procs]
    errs = [p.stderr.read().strip().splitlines() for p in procs]
    assert sorted(rcs) == [0, 2], errs
    loser = errs[rcs.index(2)]
    assert len(loser) == 1 and ('is being written by another process' in loser[0]
                                or 'already holds a run' in loser[0]), loser
    seed = rcs.index(0) + 1
    assert json.loads((out / 'config.json').read_text())['seed'] == seed
    assert json.loads((out / 'results.json').read_text())['seed'] == seed
    state = load_checkpoint(out / 'checkpoint.pt')
    assert state['config']['seed'] == seed
    weights = load_file(str(out / 'model.safetensors'))
    assert all(torch.equal(weights[k], v) for k, v in state['model'].items())


# ------------------------------------------------------------------ row 6 / 13: resume keeps data, classes, tag
def _image_folder(root, classes):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (('train', 4), ('val', 1)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(arr).save(root / split / c / f'{i}.png')
    return root


def test_resume_refuses_other_data_naming_each_field(tmp_path):
    args = dict(model=TINY, dataset='folder', batch_size=6, img_size=32, out=str(tmp_path / 'run'))
    train(TrainConfig(data=str(_image_folder(tmp_path / 'abc', 'abc')), epochs=1, **args))
    # row 14: model.safetensors is readable by others like every other run file
    assert stat.S_IMODE((tmp_path / 'run' / 'model.safetensors').stat().st_mode) == 0o644
    with pytest.raises(UsageError) as e:
        train(TrainConfig(data=str(_image_folder(tmp_path / 'cde', 'cde')), epochs=2, resume=True, **args))
    msg = str(e.value)
    assert 'tag:' not in msg  # made of the folder's name: not identity where the data is fingerprinted
    assert "classes: checkpoint ['a', 'b', 'c'], now ['c', 'd', 'e']" in msg
    assert msg.count('epochs: checkpoint 1, now 2') == 1  # the argument, not again as recipe.epochs


# ------------------------------------------------------------------ row 3: no code from data
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), 'w'))


def test_malicious_cifar_pickle_runs_nothing(tiny_cifar, tmp_path, capsys):
    data = tmp_path / 'data'
    shutil.copytree(tiny_cifar / 'cifar-10-batches-py', data / 'cifar-10-batches-py')
    test_batch = data / 'cifar-10-batches-py' / 'test_batch'
    entry = pickle.loads(test_batch.read_bytes())
    marker = tmp_path / 'pwned'
    entry['batch_label'] = _Payload(marker)
    test_batch.write_bytes(pickle.dumps(entry, protocol=2))
    ds = cifar_dataset(data, 'cifar10', train=True)                         # untouched files still read
    assert ds.data.shape == (64, 32, 32, 3)
    with pytest.raises(DataError, match=r'refusing to load (_?io|builtins)\.open'):  # _io on 3.13
        cifar_dataset(data, 'cifar10', train=False)
    weights = tmp_path / 'w.safetensors'  # the data is opened before the weights are read
    weights.write_bytes(b'not read')
    rc, err = _cli(capsys, 'eval', '--model', TINY, '--checkpoint', weights, '--data', data, '--dataset', 'cifar10')
    _one_line_error(rc, err, 'refusing to load', 'open: a CIFAR file holds only arrays')
    assert not marker.exists()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):                    # honest files of any protocol still read
        entry['batch_label'] = 'testing batch 1 of 1'
        test_batch.write_bytes(pickle.dumps(entry, protocol=protocol))
        ds = cifar_dataset(data, 'cifar10', train=False)
        assert ds.data.shape == (32, 32, 32, 3) and ds.targets == list(entry['labels']), protocol


# ------------------------------------------------------------------ row 4: push uploads only what export wrote
def test_push_refuses_symlinks_and_unparsed_json(checkpoint, tmp_path, monkeypatch):
    _, exported = checkpoint
    folder = tmp_path / 'export'
    shutil.copytree(exported, folder)
    validate_export(folder)
    secret = tmp_path / '.env'
    secret.write_text((folder / 'hparams.json').read_text())                # valid JSON, so only the link is wrong
    (folder / 'hparams.json').unlink()
    (folder / 'hparams.json').symlink_to(secret)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    with pytest.raises(InvalidExportError, match=r"symlinks \['hparams.json'\]"):
        push_folder(folder)
    (folder / 'hparams.json').unlink()
    for bad in ('not json', '{"lr": NaN}', '{"top1": 1e400}'):
        (folder / 'train_log.json').write_text(bad)
        shutil.copy(secret, folder / 'hparams.json')
        with pytest.raises(InvalidExportError, match='train_log.json is not valid JSON'):
            push_folder(folder)


def test_push_with_the_hub_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from conftest import write_cifar_run
    write_cifar_run(tmp_path / 'run', ZOO_MODEL, 0, dataset='cifar10')  # a bare checkpoint's export is not pushed
    exported = export_run([tmp_path / 'run'], tmp_path / 'export').path
    monkeypatch.setattr(constants, 'ENDPOINT', 'http://127.0.0.1:9')   # discard port: the connection is refused
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    monkeypatch.setenv('ZAMZOO_MANIFEST', str(tmp_path / 'manifest.json'))
    with pytest.raises(WeightsError, match='cannot be reached'):
        push_folder(exported)
    assert not (tmp_path / 'manifest.json').exists()


# ------------------------------------------------------------------ row 5: nothing non-finite is saved or published
def test_diverging_run_fails_and_leaves_no_weights(tiny_cifar, tmp_path, capsys):
    out = tmp_path / 'diverged'
    with pytest.raises(NonFiniteError, match='NaN or infinite'):
        train(TrainConfig(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=2, batch_size=16, lr=1e6,
                          out=str(out)))
    assert not (out / 'model.safetensors').exists()
    failed = _io.loads_strict((out / 'failed.json').read_text())          # strict JSON; results.json: completed runs
    assert failed['status'] == 'failed' and 'NaN or infinite' in failed['error'] and not (out / 'results.json').exists()
    ok = train(TrainConfig(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=1, batch_size=16, out=str(out)))
    assert ok['status'] == 'completed' and (out / 'model.safetensors').is_file()  # failed before a checkpoint: retry
    for line in (out / 'metrics.jsonl').read_text().splitlines() if (out / 'metrics.jsonl').exists() else []:
        _io.loads_strict(line)
    with pytest.raises(UsageError, match='lr'):
        TrainConfig(model=TINY, data='.', lr=math.inf).validate()


class _Preempted(Exception):
    """What a pre-empted job's signal handler raises (submitit's UncompletedJobError, for a zoo worker on SLURM)."""


@pytest.mark.parametrize('error, failed', [(RuntimeError('disk on fire'), True), (_Preempted('requeue'), False),
                                           (KeyboardInterrupt(), False)])
def test_a_run_that_raises_while_it_trains_is_marked_failed_unless_interrupted(tiny_cifar, tmp_path, monkeypatch,
                                                                                capsys, error, failed):
    from zamzoo.train import loop
    from zamzoo.train.run_folder import run_status

    one_epoch, out = loop._one_epoch, tmp_path / 'run'

    def second_epoch_raises(lp, epoch):
        if epoch == 1:
            raise error
        return one_epoch(lp, epoch)

    config = TrainConfig(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=2, batch_size=32, out=str(out))
    monkeypatch.setattr(loop, '_one_epoch', second_epoch_raises)
    with pytest.raises(type(error)):
        train(config, interruptions=(_Preempted,))
    assert (out / 'failed.json').exists() == failed
    status = run_status(out)
    assert (status.state, len(status.history)) == ('failed' if failed else 'pending', 1), status
    if failed:
        assert status.error == 'RuntimeError: disk on fire' and status.error_type == 'RuntimeError'
    else:  # `zamzoo eval` of the interrupted run said nothing of its being unfinished
        assert main(['eval', '--model', TINY, '--checkpoint', str(out), '--data', str(tiny_cifar)]) == 0
        assert ('note: the run has not finished (pending after epoch 1 of 2): these are its last checkpoint\'s '
                'weights\n') in capsys.readouterr().out
    monkeypatch.setattr(loop, '_one_epoch', one_epoch)
    assert train(dataclasses.replace(config, resume=True))['status'] == 'completed'
    assert run_status(out).state == 'done' and not (out / 'failed.json').exists()
    assert main(['eval', '--model', TINY, '--checkpoint', str(out), '--data', str(tiny_cifar)]) == 0
    assert 'not finished' not in capsys.readouterr().out


@pytest.mark.filterwarnings('ignore:Detected call of')  # the skipped first step steps the scheduler alone
def test_bad_steps_are_counted_skipped_or_fatal():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    good = (torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), 4)
    bad = (torch.full((4, 3, 2, 2), math.nan), torch.tensor([0, 1, 2, 0]), 4)
    kw = dict(device=torch.device('cpu'), amp_dtype=None)

    def run(batches, max_bad_steps):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return train_one_epoch(model, batches, opt, sched, max_bad_steps=max_bad_steps, **kw)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    sums = run([bad, good], max_bad_steps=1)                                # tolerated: skipped, no update
    assert int(sums['count']) == 4 and math.isfinite(float(sums['loss_sum'])) and int(sums['skipped_steps']) == 1
    assert all(v.isfinite().all() for v in model.state_dict().values())
    assert not torch.equal(before['1.weight'], model.state_dict()['1.weight'])   # the good step did update
    with pytest.raises(NonFiniteError, match='2 bad steps by step 3'):
        run([bad, good, bad], max_bad_steps=1)
    with pytest.raises(NonFiniteError, match='1 bad step by step 2'):
        run([good, bad], max_bad_steps=0)


@pytest.mark.filterwarnings('ignore:Detected call of')  # the skipped first step steps the scheduler alone
def test_skipped_steps_are_a_tolerance_per_epoch_and_leave_a_trace(tiny_cifar, tmp_path, monkeypatch):
    """--max-bad-steps 1 with a NaN batch in each epoch: the run completes (the tolerance is each epoch's, as its help
    says), and each epoch's record counts its skipped step, with a warning; they were skipped without a word."""
    from zamzoo.train import loop
    from zamzoo.train.run_folder import run_status

    eager_step = loop._eager_step

    def first_batch_nan(step_math, optimizer, scaler, batch, *rest):
        if rest[-1][0] == 1:  # step_of: (step, steps)
            batch = (torch.full_like(batch[0], math.nan), *batch[1:])
        return eager_step(step_math, optimizer, scaler, batch, *rest)

    monkeypatch.setattr(loop, '_eager_step', first_batch_nan)
    out = tmp_path / 'run'
    config = TrainConfig(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=2, batch_size=32, max_bad_steps=1,
                         out=str(out))
    with pytest.warns(UserWarning, match=r'epoch \d: 1 step with a NaN/inf loss skipped \(--max-bad-steps 1 '
                                         r'tolerates as many in each epoch\)') as warned:
        assert train(config)['status'] == 'completed'
    assert sum('NaN/inf loss skipped' in str(w.message) for w in warned) == 2
    assert [r['skipped_steps'] for r in run_status(out).history] == [1, 1]


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(16, 3))


def _one_epoch(model, batches, max_bad_steps, world_size=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return train_one_epoch(model, batches, opt, sched, device=torch.device('cpu'), amp_dtype=None,
                           world_size=world_size, max_bad_steps=max_bad_steps)


@pytest.mark.filterwarnings('ignore:Detected call of')
def test_a_skipped_step_leaves_no_trace_in_the_batchnorm_statistics():
    """The bad batch's forward had updated the running statistics (NaN) before the step was skipped: the model then
    evaluated to NaN and the run failed anyway. Now a tolerated bad step leaves the model as if it never came."""
    good = (torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), 4)
    bad = (torch.full((4, 3, 2, 2), math.nan), torch.tensor([0, 1, 2, 0]), 4)
    skipped, clean = _bn_net(), _bn_net()
    _one_epoch(skipped, [bad, good], max_bad_steps=1)
    _one_epoch(clean, [good], max_bad_steps=1)
    assert skipped.state_dict().keys() == clean.state_dict().keys()
    for key, value in skipped.state_dict().items():
        assert torch.equal(value, clean.state_dict()[key]), key  # num_batches_tracked: 1, the good step's


@pytest.mark.filterwarnings('ignore:Detected call of')
def test_a_step_bad_on_another_rank_is_skipped_here_too(monkeypatch):
    """With several processes each rank must skip the same steps (DDP pairs each rank's gradients in its all-reduce):
    the finite flag is and'ed over the ranks. Another rank's bad loss is played by the all-reduce."""
    import zamzoo.train.distributed as D
    bad_steps = {1}  # the steps another rank found bad

    def all_reduce(flag, op):
        assert op == D.dist.ReduceOp.MIN and flag.dtype == torch.int32
        calls.append(int(flag))
        if len(calls) in bad_steps:
            flag.zero_()
    monkeypatch.setattr(D.dist, 'all_reduce', all_reduce)
    good = (torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), 4)
    skipped, clean = _bn_net(), _bn_net()
    calls = []
    sums = _one_epoch(skipped, [good, good], max_bad_steps=1, world_size=2)
    assert calls == [1, 1] and int(sums['count']) == 4  # this rank's steps were finite; the first was skipped
    calls, bad_steps = [], set()
    _one_epoch(clean, [good], max_bad_steps=1, world_size=2)  # (the world size scales the loss)
    assert all(torch.equal(value, clean.state_dict()[key]) for key, value in skipped.state_dict().items())
    calls, bad_steps = [], {1, 2}
    with pytest.raises(NonFiniteError, match='2 bad steps by step 2'):
        _one_epoch(skipped, [good, good], max_bad_steps=1, world_size=2)


def test_export_and_push_refuse_non_finite(checkpoint, tmp_path):
    src, exported = checkpoint
    state = load_file(str(src))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = math.nan
    save_file(state, str(tmp_path / 'nan.safetensors'))
    with pytest.raises(NonFiniteError, match='1 of .* weight tensors hold NaN'):
        _export(tmp_path / 'nan.safetensors', tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
    folder = tmp_path / 'export'
    shutil.copytree(exported, folder)
    save_file(state, str(folder / 'model.safetensors'))
    results = json.loads((folder / 'results.json').read_text())
    results.update(sha256=_sha(folder / 'model.safetensors'), size_bytes=(folder / 'model.safetensors').stat().st_size)
    (folder / 'results.json').write_text(json.dumps(results))
    write_checksums(folder)  # an export that wrote these weights itself
    with pytest.raises(InvalidExportError, match='hold NaN or infinity'):
        validate_export(folder)


def _sha(path):
    from zamzoo.publish.export import sha256_file
    return sha256_file(path)


def test_json_we_write_is_strict(tmp_path):
    with pytest.raises(NonFiniteError):
        _io.write_json_atomic(tmp_path / 'x.json', {'top1': math.nan})
    assert not (tmp_path / 'x.json').exists() and list(tmp_path.iterdir()) == []
    for text in ('NaN', '{"a": Infinity}', '[-Infinity]', '1e999'):
        with pytest.raises(ValueError):
            _io.loads_strict(text)


def test_export_refuses_failed_run_and_bad_config(checkpoint, tmp_path):
    src, _ = checkpoint
    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(src, run / 'model.safetensors')
    (run / 'metrics.jsonl').write_text('')
    config = dict(model=ZOO_MODEL, dataset='cifar10', seed=0, num_classes=10, recipe=dict(name='zam', version=1))
    (run / 'results.json').write_text(json.dumps(dict(status='failed', error='loss is NaN')))
    (run / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ExportError, match='failed run'):
        export_run([run], tmp_path / 'out')
    (run / 'results.json').write_text(json.dumps(dict(status='completed', top1=50.0, top5=90.0)))
    (run / 'config.json').write_text(json.dumps(dict(config, seed='abc')))  # row 13
    with pytest.raises(ExportError, match="'seed' must be an integer, got 'abc'"):
        export_run([run], tmp_path / 'out')
    (run / 'config.json').write_text(json.dumps([config]))                  # row 12: a list
    with pytest.raises(ExportError, match='holds a JSON list; expected an object'):
        export_run([run], tmp_path / 'out')


# ------------------------------------------------------------------ row 11: stale temporary files
def test_stale_temporaries_removed_when_the_run_folder_is_opened(tmp_path):
    stale = [tmp_path / '.checkpoint.pt.k1ll3d.tmp', tmp_path / '.model.safetensors.x.tmp']
    for p in stale:
        p.write_bytes(b'half a checkpoint')
    other = tmp_path / '.notes.txt.x.tmp'
    other.write_text('not ours')
    with lock_run_folder(tmp_path):
        assert not any(p.exists() for p in stale)
    assert other.read_text() == 'not ours'


# ------------------------------------------------------------------ row 12: one line, before the work
def test_outputs_checked_before_the_work(tiny_cifar, tmp_path, capsys, monkeypatch):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    rc, err = _cli(capsys, 'train', '--model', TINY, '--data', tiny_cifar, '--epochs', '1', '--out', afile)
    _one_line_error(rc, err, 'is a file; expected a folder')

    monkeypatch.setattr(sys.modules['zamzoo.train.evaluate'], 'evaluate', lambda *a, **k: pytest.fail('evaluated before checking --json'))
    rc, err = _cli(capsys, 'eval', '--model', TINY, '--checkpoint', 'x', '--data', tiny_cifar, '--json',
                   afile / 'r.json')
    _one_line_error(rc, err, 'is a file, not a folder')
    rc, err = _cli(capsys, 'eval', '--model', TINY, '--checkpoint', 'x', '--data', tiny_cifar, '--json', afile)
    _one_line_error(rc, err, 'is not an earlier `zamzoo eval --json` result; refusing to overwrite it')
    rc, err = _cli(capsys, 'viz', '--model', TINY, '--image', 'x.png', '--out', afile)
    _one_line_error(rc, err, 'is not a figure zamzoo viz wrote; refusing to overwrite it')
    assert afile.read_text() == 'x'
    _one_line_error(*_cli(capsys, 'quickstart', '--out', afile / 'q'), 'is a file, not a folder')
    _one_line_error(*_cli(capsys, 'bench', 'models', '--models', 'resnet18_zam', '--counts-only', '--out', afile),
                    'is a file; expected a folder')
    with pytest.raises(OutputError, match='not writable'):                  # read-only (even for root)
        _paths.check_writable('/sys/zamzoo-out')

    monkeypatch.setattr(_paths.shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 1000))
    out = tmp_path / 'full-disk'
    with pytest.raises(OutputError, match='MiB free'):
        train(TrainConfig(model=TINY, data=str(tiny_cifar), epochs=1, batch_size=16, out=str(out)))
    assert not (out / 'checkpoint.pt').exists()


def test_a_checkpoint_without_part_of_its_state_is_refused_naming_it(tmp_path):
    from zamzoo.errors import ZamzooError
    from zamzoo.train.checkpoint import checkpoint_state, load_checkpoint
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = checkpoint_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, epoch=1, config={},
                             history=[])
    write_checkpoint(tmp_path / 'checkpoint.pt', state)
    assert load_checkpoint(tmp_path / 'checkpoint.pt')['epoch'] == 1
    del state['rng'], state['history']
    write_checkpoint(tmp_path / 'checkpoint.pt', state)
    with pytest.raises(ZamzooError, match=r'checkpoint.pt is a damaged zamzoo checkpoint: it has no rng, history; to '
                                          r'train the run from the start again, move .* away'):
        load_checkpoint(tmp_path / 'checkpoint.pt')


def test_each_rank_resumes_with_its_own_rng_state(tmp_path):
    """Every rank of a run of several processes restored rank 0's RNG state: a model drawing random numbers went on
    with another rank's stream."""
    from zamzoo.train.checkpoint import (checkpoint_state, load_checkpoint, rank_rng_state, rng_state,
                                         set_rng_state)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    ranks = []
    for seed in (0, 1):  # two ranks' streams
        torch.manual_seed(seed)
        ranks.append((rng_state(), torch.rand(3)))
    state = checkpoint_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, epoch=1, config={},
                             history=[], rank_rngs=[rng for rng, _ in ranks])
    write_checkpoint(tmp_path / 'checkpoint.pt', state)
    state = load_checkpoint(tmp_path / 'checkpoint.pt')
    for rank, (_, draws) in enumerate(ranks):
        set_rng_state(rank_rng_state(state, rank))
        assert torch.equal(torch.rand(3), draws)
    one = checkpoint_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, epoch=1, config={},
                           history=[], rank_rngs=[ranks[0][0]])
    assert 'rank_rngs' not in one and rank_rng_state(one, 0) is one['rng']  # one process: the one state
    del state['rank_rngs']  # a checkpoint written before each rank's state was saved
    assert rank_rng_state(state, 1) is state['rng']


def test_an_atomic_write_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    """fsync of the written file before it is renamed into place, then of the folder (the rename): a machine crash
    leaves the old or the new file, not an empty one."""
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}'))) or
                        fsync(fd))
    monkeypatch.setattr(os, 'replace', lambda a, b: events.append(('replace', str(a), str(b))) or replace(a, b))
    _io.write_text_atomic(tmp_path / 'results.json', '{}')
    [(_, synced), (_, renamed, target), (_, folder)] = events
    assert synced == renamed and target == str(tmp_path / 'results.json') and folder == str(tmp_path)


def test_disk_full_while_writing_is_one_line(tmp_path, monkeypatch):
    def full(*a, **k):
        raise RuntimeError('[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file '
                           'data/0: file write failed\nmore lines')
    monkeypatch.setattr(torch, 'save', full)
    with pytest.raises(OutputError, match=r'is the disk full\?.*file write failed$'):
        write_checkpoint(tmp_path / 'checkpoint.pt', {})
    with pytest.raises(OutputError, match='No space left on device'):
        with _io.atomic_path(tmp_path / 'results.json'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_one_line(tiny_cifar, tmp_path, capsys):
    base = ['train', '--model', TINY, '--data', tiny_cifar, '--epochs', '1', '--out', tmp_path / 'r']
    _one_line_error(*_cli(capsys, *base, '--model-kwargs', 'bogus=1'), "does not accept it", 'bogus')
    _one_line_error(*_cli(capsys, *base, '--device', 'gpu0'), "device: unknown 'gpu0'")
    _one_line_error(*_cli(capsys, 'viz', '--model', 'resnet18_zma', '--image', 'x.png', '--out', tmp_path / 'v.png'),
                    "unknown model 'resnet18_zma'")
    run = tmp_path / 'listrun'
    run.mkdir()
    (run / 'config.json').write_text('[1, 2]')
    save_file({'w': torch.zeros(1)}, str(run / 'model.safetensors'))
    _one_line_error(*_cli(capsys, 'eval', '--model', TINY, '--checkpoint', run, '--data', tiny_cifar),
                    'holds a JSON list')


# ------------------------------------------------------------------ row 13: viz accepts run folders like eval
def test_viz_accepts_a_run_folder(tmp_path, capsys):
    import timm
    from PIL import Image
    net = timm.create_model('mobilenet_simam', num_classes=10)
    (tmp_path / 'run').mkdir()
    save_file(net.state_dict(), str(tmp_path / 'run' / 'model.safetensors'))
    Image.new('RGB', (32, 32), (200, 30, 30)).save(tmp_path / 'img.png')
    rc = main(['viz', '--model', 'mobilenet_simam', '--checkpoint', str(tmp_path / 'run'), '--image',
               str(tmp_path / 'img.png'), '--out', str(tmp_path / 'maps.png')])
    assert rc == 0 and (tmp_path / 'maps.png').is_file(), capsys.readouterr().err


# ------------------------------------------------------------------ row 14: internal errors keep their traceback
def test_internal_value_error_is_not_swallowed(monkeypatch):
    import zamzoo.publish.commands as commands

    def broken(args):
        raise ValueError('an internal bug')
    monkeypatch.setattr(commands, '_export', broken)
    with pytest.raises(ValueError, match='an internal bug'):
        main(['export', 'x'])
