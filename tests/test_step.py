"""zamzoo.train.step (issue 20, item 2): the training step that can be captured whole in a CUDA graph.

The capture itself needs a CUDA device and cannot run here (CPU only): these tests run the same step function
eagerly and check that it computes what the eager loop computes, bit for bit, against a plain loop written out here
(forward, summed CE / batch + penalty, backward, SGD, the recipe's lr per step) and against `train_one_epoch`'s
eager step; that the device-tensor lr follows the float schedule exactly; that a resumed run ends where an
uninterrupted one does; and the refusals.
"""
import json

import pytest
import torch
import torch.nn.functional as F

from zamzoo.data import TensorLoader
from zamzoo.errors import UsageError
from zamzoo.recipes import get_recipe
from zamzoo.train import TrainConfig, train
from zamzoo.train.build import build_pieces, create_model
from zamzoo.train.loop import train_one_epoch
from zamzoo.train.reporting import Reporter
from zamzoo.train.schedule import recipe_lr
from zamzoo.train.step import StepMath, TrainStep, graph_refusal

pytestmark = pytest.mark.usefixtures('single_thread')

TINY = 'test_resnet'
N, BATCH, EPOCHS = 20, 6, 2  # 4 steps an epoch, the last one of 2 images: a second batch shape
LABEL_SMOOTHING = 0.1


def _recipe():
    # warm-up over the first epoch, then a fall at the second: the lr changes at every step; NAM's L1 on a model
    # without NAM would be no penalty, so the test's own penalty is passed below
    return get_recipe('zam').replace(epochs=EPOCHS, batch_size=BATCH, warmup_epochs=1, milestones=(2,),
                                     label_smoothing=LABEL_SMOOTHING)


def _pieces(seed=0, device='cpu', model=TINY, recipe=None):
    torch.manual_seed(seed)
    model = create_model(model, num_classes=10)
    return build_pieces(model, torch.device(device), None, channels_last=False, recipe=recipe or _recipe(),
                        steps_per_epoch=-(-N // BATCH))


def _penalty(model):
    return 1e-3 * sum(p.pow(2).sum() for p in model.parameters() if p.dim() == 1)


def _loader(device='cpu'):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 10, (N,), generator=g)
    return TensorLoader(images, targets, BATCH, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=True, seed=3,
                        device=device)


def _run(pieces, train_step=None, epochs=EPOCHS, device='cpu'):
    """`epochs` epochs of train_one_epoch: the host values of each epoch's sums."""
    loader, sums_of = _loader(device), []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        sums = train_one_epoch(pieces.model, loader, pieces.optimizer, pieces.scheduler, device=torch.device(device),
                               amp_dtype=None, label_smoothing=LABEL_SMOOTHING, penalty=_penalty,
                               penalty_model=pieces.model, max_bad_steps=0, train_step=train_step)
        sums_of.append({k: v.item() for k, v in sums.items()})
    return sums_of


def _reference(pieces):
    """The same epochs as a plain loop, written out without zamzoo's step."""
    loader, epochs = _loader(), []
    model, optimizer, scheduler = pieces.model, pieces.optimizer, pieces.scheduler
    model.train()
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        sums = dict(loss_sum=0.0, penalty_sum=0.0, correct=0, count=0, steps=0)
        for x, y, n in loader:
            logits = model(x)
            ce = F.cross_entropy(logits, y, reduction='sum', label_smoothing=LABEL_SMOOTHING)
            pen = _penalty(model)
            optimizer.zero_grad()
            (ce * (1 / n) + pen).backward()
            optimizer.step()
            scheduler.step()
            sums['loss_sum'] += ce.double().item()  # the loop sums in float64 on the device: same additions
            sums['penalty_sum'] += pen.double().item()
            sums['correct'] += int((logits.argmax(-1) == y).sum())
            sums['count'] += len(y)
            sums['steps'] += 1
        epochs.append(dict(sums, skipped_steps=0))  # the plain loop skips none
    return epochs


def _assert_same_state(a, b):
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa['param_groups'] == sb['param_groups']  # lr a float in both
    assert sa['state'].keys() == sb['state'].keys()
    for i in sa['state']:
        assert torch.equal(sa['state'][i]['momentum_buffer'], sb['state'][i]['momentum_buffer']), i
    assert a.scheduler.state_dict() == b.scheduler.state_dict()


def test_capturable_step_equals_the_eager_loop_and_a_plain_loop_bit_for_bit():
    reference, eager, stepped = _pieces(), _pieces(), _pieces()
    ref_sums = _reference(reference)
    eager_sums = _run(eager)
    step = TrainStep(StepMath(stepped.model, torch.device('cpu'), None, 1, LABEL_SMOOTHING, _penalty, stepped.model),
                     stepped.optimizer, count_bad=True, capture=False)
    step_sums = _run(stepped, step)
    assert isinstance(stepped.optimizer.param_groups[0]['lr'], torch.Tensor)
    assert eager_sums == ref_sums
    assert step_sums == ref_sums
    assert step_sums[0] != step_sums[1]  # each epoch its own sums, though the step writes into the same tensors
    _assert_same_state(stepped, reference)
    _assert_same_state(eager, reference)
    assert any(not torch.equal(a, b) for a, b in zip(stepped.model.state_dict().values(),
                                                     _pieces().model.state_dict().values()))  # it trained


@pytest.mark.filterwarnings('ignore:Detected call of:UserWarning')  # no optimizer steps here
@pytest.mark.parametrize('recipe', ['zam', 'finetune'])  # warm-up + multistep; warm-up + cosine
def test_tensor_lr_follows_the_float_schedule_exactly(recipe):
    rec = get_recipe(recipe).replace(epochs=3, warmup_epochs=1)
    steps_per_epoch = 5
    floats, tensors = (build_pieces(torch.nn.Linear(2, 2), torch.device('cpu'), None, channels_last=False,
                                    recipe=rec, steps_per_epoch=steps_per_epoch) for _ in range(2))
    TrainStep(StepMath(tensors.model, torch.device('cpu'), None), tensors.optimizer, count_bad=False, capture=False)
    lr = tensors.optimizer.param_groups[0]['lr']
    for step in range(3 * steps_per_epoch):
        expected = recipe_lr(rec, rec.lr, step, steps_per_epoch, 3)
        assert floats.optimizer.param_groups[0]['lr'] == expected
        assert lr.item() == expected and lr.dtype == torch.float64
        assert tensors.optimizer.param_groups[0]['lr'] is lr  # filled in place: a captured step reads it
        floats.scheduler.step()
        tensors.scheduler.step()
    # what a checkpoint keeps is as without the tensor: floats, loadable into either optimizer
    state = tensors.optimizer.state_dict()
    assert state['param_groups'] == floats.optimizer.state_dict()['param_groups']
    assert tensors.scheduler.state_dict() == floats.scheduler.state_dict()
    tensors.optimizer.load_state_dict(floats.optimizer.state_dict())
    tensors.scheduler.load_state_dict(floats.scheduler.state_dict())
    assert tensors.optimizer.param_groups[0]['lr'] is lr and lr.item() == floats.optimizer.param_groups[0]['lr']


def _weights(folder):
    from safetensors.torch import load_file
    return load_file(str(folder / 'model.safetensors'))


def _history(folder):
    return [json.loads(x) for x in (folder / 'metrics.jsonl').read_text().splitlines()]


class _Stop(Exception):
    pass


class _StopAfterFirstEpoch(Reporter):
    """Ends the session after the first epoch's checkpoint, as a crash would."""

    def epoch_end(self, record, epochs):
        raise _Stop


def test_cuda_graph_run_resumes_and_equals_the_eager_run(tiny_cifar, tmp_path):
    args = dict(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=2, batch_size=24, seed=5, device='cpu')
    eager = train(TrainConfig(out=str(tmp_path / 'eager'), **args))
    with pytest.warns(UserWarning, match='no CUDA graph on cpu'):
        graph = train(TrainConfig(out=str(tmp_path / 'graph'), cuda_graph=True, **args))
        with pytest.raises(_Stop):
            train(TrainConfig(out=str(tmp_path / 'resumed'), cuda_graph=True, **args), _StopAfterFirstEpoch())
        assert len(_history(tmp_path / 'resumed')) == 1 and not (tmp_path / 'resumed' / 'model.safetensors').exists()
        resumed = train(TrainConfig(out=str(tmp_path / 'resumed'), cuda_graph=True, resume=True, **args))
    for folder in ('graph', 'resumed'):
        a, b = _weights(tmp_path / 'eager'), _weights(tmp_path / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
        keep = ('train_loss', 'train_top1', 'test_loss', 'test_top1', 'lr')
        assert [{k: r[k] for k in keep} for r in _history(tmp_path / folder)] == \
            [{k: r[k] for k in keep} for r in _history(tmp_path / 'eager')], folder
    assert graph['top1'] == resumed['top1'] == eager['top1']
    assert graph['cuda_graph'] is False and eager['cuda_graph'] is False  # what ran: no graph on a CPU
    # recorded when used; a run without it keeps the config.json it always had
    assert json.loads((tmp_path / 'graph' / 'config.json').read_text())['args']['cuda_graph'] is True
    assert 'cuda_graph' not in json.loads((tmp_path / 'eager' / 'config.json').read_text())['args']


def test_refusals_say_why():
    assert graph_refusal(world_size=1) is None
    assert graph_refusal(world_size=1, max_bad_steps=0) is None
    assert 'GradScaler' in graph_refusal(world_size=1, scaler=torch.amp.GradScaler('cpu', enabled=True))
    assert graph_refusal(world_size=1, scaler=torch.amp.GradScaler('cpu', enabled=False)) is None
    assert '--max-bad-steps 2' in graph_refusal(world_size=1, max_bad_steps=2)
    assert 'DDP' in graph_refusal(world_size=2)
    p = _pieces()
    with pytest.raises(ValueError, match='needs a CUDA device'):
        TrainStep(StepMath(p.model, torch.device('cpu'), None), p.optimizer, count_bad=True, capture=True)
    step = TrainStep(StepMath(p.model, torch.device('cpu'), None), p.optimizer, count_bad=True, capture=False)
    with pytest.raises(ValueError, match='train_step: --max-bad-steps 3 checks every loss on the host'):
        train_one_epoch(p.model, _loader(), p.optimizer, p.scheduler, device=torch.device('cpu'), amp_dtype=None,
                        max_bad_steps=3, train_step=step)
    with pytest.raises(UsageError, match='reduce-overhead makes CUDA graphs of its own'):
        TrainConfig(model=TINY, data='.', cuda_graph=True, compile=True, compile_mode='reduce-overhead').validate()
    TrainConfig(model=TINY, data='.', cuda_graph=True, compile=True).validate()


def test_a_refused_capture_warns_and_runs_the_eager_step(tiny_cifar, tmp_path):
    args = dict(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=1, batch_size=32, seed=1, device='cpu')
    with pytest.warns(UserWarning, match='not captured, the eager step runs: --max-bad-steps 1'):
        refused = train(TrainConfig(out=str(tmp_path / 'refused'), cuda_graph=True, max_bad_steps=1, **args))
    plain = train(TrainConfig(out=str(tmp_path / 'plain'), max_bad_steps=1, **args))
    assert refused['top1'] == plain['top1']
    a, b = _weights(tmp_path / 'refused'), _weights(tmp_path / 'plain')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bench_measures_the_captured_step_as_one_more_mode(tmp_path):
    import shlex

    from zamzoo.bench import gpu
    from zamzoo.cli import build_parser
    from zamzoo.train.bench import bench_train

    s = gpu.GpuBenchSettings(models=[TINY], modes=['eager', 'cuda-graph', 'default'], batch_size=8, steps=2,
                             warmup_steps=1)
    assert [what for part, what in gpu._plan(s) if part == 'train'] == \
        [(TINY, 'eager'), (TINY, 'cuda-graph'), (TINY, 'default')]  # with eager, before the profile and the zoo
    cmd = gpu.train_command(TINY, 'cuda-graph', s, 'cuda')
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert args.cuda_graph and not args.compile
    assert 'CUDA' in gpu.measure_train(TINY, 'cuda-graph', s, torch.device('cpu'))['skipped']
    # the same wiring on CPU runs the capturable step eagerly (no graph): a real measurement, recorded as such
    r = bench_train(TINY, device='cpu', batch_size=8, images=16, warmup_steps=1, reference=False, cuda_graph=True,
                    num_classes=10, out=str(tmp_path))
    assert r['ours']['cuda_graph'] is False and r['ours']['images_per_s'] > 0
    assert r['path'].endswith(f'train-{TINY}-cpu-b8-zam-none-graph.json')
    with pytest.raises(UsageError, match='max-autotune makes CUDA graphs of its own'):  # refused as train refuses it
        bench_train(TINY, device='cpu', batch_size=8, images=16, warmup_steps=1, reference=False, cuda_graph=True,
                    compile=True, compile_mode='max-autotune', num_classes=10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the capture needs a CUDA device (none on this machine)')
def test_captured_step_equals_the_same_step_run_eagerly_on_cuda():
    """Four epochs of 3 full batches and a partial one: the full batch warms up 3 times, is captured in the second
    epoch and replayed from then on; the partial batch is captured in the fourth. Deterministic cuDNN, fp32."""
    from zamzoo.train.step import WARMUP_STEPS

    assert WARMUP_STEPS == 3
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        eager, captured = _pieces(device='cuda'), _pieces(device='cuda')
        steps = [TrainStep(StepMath(p.model, torch.device('cuda'), None, 1, LABEL_SMOOTHING, _penalty, p.model),
                           p.optimizer, count_bad=True, capture=capture)
                 for p, capture in ((eager, False), (captured, True))]
        eager_sums = _run(eager, steps[0], epochs=4, device='cuda')
        captured_sums = _run(captured, steps[1], epochs=4, device='cuda')
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic
    assert len(steps[1].graphs) == 2
    for a, b in zip(eager_sums, captured_sums):
        assert a == pytest.approx(b, rel=1e-5)
    for (k, v), w in zip(eager.model.state_dict().items(), captured.model.state_dict().values()):
        torch.testing.assert_close(w, v, rtol=1e-5, atol=1e-6, msg=k)
