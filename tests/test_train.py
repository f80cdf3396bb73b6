"""zamzoo.train: schedules, penalties, a full CPU run and its artefacts, kill + resume, DDP (gloo), errors, eval,
bench train. Runs use timm's tiny `test_*` models on the tiny_cifar fixture to stay fast on two CPU cores."""
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

from zamzoo.cli import main
from zamzoo.errors import ZamzooError
from zamzoo.recipes import get_recipe
from zamzoo.train import RecipeLR, TrainConfig, evaluate, load_checkpoint, recipe_lr, train
from zamzoo.train.build import create_model, make_optimizer, penalty_fn
from zamzoo.train.loop import train_one_epoch

pytestmark = pytest.mark.usefixtures('single_thread')

REPO = Path(__file__).resolve().parent.parent
TINY = 'test_resnet'          # timm's 0.38M-param test ResNet (with BatchNorm), fine at 32x32



def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
    env['OMP_NUM_THREADS'] = '1'
    return env


# ------------------------------------------------------------------------------------------------ schedules

class _SeedWarmUp(LRScheduler):
    """The ZAM seed's WarmUpLR semantics: lr = base_lr * last_epoch / (total_iters + 1e-8)."""

    def __init__(self, optimizer, total_iters):
        self.total_iters = total_iters
        super().__init__(optimizer)

    def get_lr(self):
        return [base * self.last_epoch / (self.total_iters + 1e-8) for base in self.base_lrs]


def _opt(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def _ours(recipe, n, epochs):
    """lr of every step from RecipeLR stepped once per optimizer step, as the loop does."""
    opt = _opt(recipe.lr)
    sched = RecipeLR(opt, recipe, n, epochs)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(n * epochs):
            lrs.append(opt.param_groups[0]['lr'])
            sched.step()
    return lrs


def test_zam_schedule_is_the_seed_loop_exactly():
    # The ZAM seed's loop (weiaicunzai's, as the seed copied it): MultiStepLR built first, then WarmUpLR over the
    # iterations of epoch 1; epochs counted from 1; train_scheduler.step(epoch) before each epoch > 1;
    # warmup_scheduler.step() at the START of each iteration of epoch 1.
    recipe = get_recipe('zam')
    n, epochs = 391, recipe.epochs
    opt = _opt()
    train_sched = MultiStepLR(opt, milestones=list(recipe.milestones), gamma=recipe.gamma)
    warm = _SeedWarmUp(opt, n * recipe.warmup_epochs)
    seed = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for epoch in range(1, epochs + 1):
            if epoch > recipe.warmup_epochs:
                train_sched.step(epoch)
            for _ in range(n):
                if epoch <= recipe.warmup_epochs:
                    warm.step()
                seed.append(opt.param_groups[0]['lr'])
    assert _ours(recipe, n, epochs) == seed                                  # every one of 78,200 steps, bit-exact
    # the same by hand
    lr = lambda step: recipe_lr(recipe, 0.1, step, n, epochs)  # noqa: E731
    assert lr(0) == 0.1 * 1 / (391 + 1e-8) and lr(1) == 0.1 * 2 / (391 + 1e-8)
    assert lr(390) == 0.1 * 391 / (391 + 1e-8)                              # last warm-up step: ~0.1
    assert lr(391) == 0.1                                                    # epoch 2
    assert lr(58 * n) == 0.1 and lr(59 * n - 1) == 0.1                      # epoch 59 (1-based)
    assert lr(59 * n) == pytest.approx(0.02, rel=1e-12)                     # epoch 60: x0.2
    assert lr(119 * n - 1) == pytest.approx(0.02, rel=1e-12)
    assert lr(119 * n) == pytest.approx(0.004, rel=1e-12)                   # epoch 120
    assert lr(159 * n) == pytest.approx(0.0008, rel=1e-12)                  # epoch 160
    assert lr(200 * n - 1) == pytest.approx(0.0008, rel=1e-12)


def test_nam_schedule_no_warmup_milestones_from_zero():
    # NAM's train_cifar100.py: MultiStepLR(milestones=[60, 120, 160], gamma=0.2) stepped after each 0-based epoch.
    recipe = get_recipe('nam')
    n, epochs = 7, recipe.epochs
    opt = _opt()
    sched = MultiStepLR(opt, milestones=list(recipe.milestones), gamma=recipe.gamma)
    ref = []
    for _ in range(epochs):
        ref += [opt.param_groups[0]['lr']] * n
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            sched.step()
    ours = _ours(recipe, n, epochs)
    assert ours == pytest.approx(ref, rel=1e-12, abs=0)
    assert ours[0] == 0.1 and ours[60 * n - 1] == 0.1                        # no warm-up; 60 full epochs at 0.1
    assert ours[60 * n] == pytest.approx(0.02) and ours[120 * n] == pytest.approx(0.004)
    assert ours[160 * n] == pytest.approx(0.0008)


def test_spem_schedule_bearpaw():
    # bearpaw's adjust_learning_rate: at the start of 0-based epoch t, lr *= 0.1 if t in (81, 122).
    recipe = get_recipe('spem')
    n, epochs = 5, recipe.epochs
    assert epochs == 164 and recipe.weight_decay == 1e-4
    lr, ref = 0.1, []
    for t in range(epochs):
        if t in (81, 122):
            lr *= 0.1
        ref += [lr] * n
    ours = _ours(recipe, n, epochs)
    assert ours == pytest.approx(ref, rel=1e-12, abs=0)
    assert ours[81 * n - 1] == 0.1 and ours[81 * n] == pytest.approx(0.01) and ours[122 * n] == pytest.approx(0.001)


def test_cosine_finetune_schedule():
    recipe = get_recipe('finetune')
    n, epochs = 10, recipe.epochs
    ours = _ours(recipe, n, epochs)
    total = n * epochs
    assert ours[0] == recipe.lr
    assert ours[total // 2] == pytest.approx(recipe.lr / 2, rel=1e-12)
    assert ours[-1] == pytest.approx(recipe.lr * 0.5 * (1 + math.cos(math.pi * (total - 1) / total)), rel=1e-12)
    assert all(a >= b for a, b in zip(ours, ours[1:]))


def test_scheduler_state_roundtrip():
    recipe = get_recipe('zam')
    opt = _opt()
    sched = RecipeLR(opt, recipe, 10, 200)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(593):
            sched.step()
    opt2 = _opt()
    sched2 = RecipeLR(opt2, recipe, 10, 200)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]['lr'] == opt.param_groups[0]['lr'] == recipe_lr(recipe, 0.1, 593, 10, 200)
    with pytest.raises(ValueError, match='steps per epoch'):
        RecipeLR(_opt(), recipe, 11, 200).load_state_dict(sched.state_dict())


# ------------------------------------------------------------------------------------------------ penalties

def _one_step(attn, recipe, seed=0):
    """One SGD step (lr 0: the weights stay) on a fixed batch of timm's test ResNet with zamzoo's `attn` module in
    every block; returns the model, its grads and the sums."""
    torch.manual_seed(seed)
    model = create_model(TINY, num_classes=10, block_args=dict(attn_layer=attn))
    g = torch.Generator().manual_seed(1)
    batch = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g), 4)]
    recipe = recipe.replace(lr=1e-30)
    opt = make_optimizer(model, recipe, torch.device('cpu'))
    for group in opt.param_groups:
        group['lr'] = 0.0
    sched = RecipeLR(opt, recipe.replace(lr=1e-30), 1, 1)
    sums = train_one_epoch(model, batch, opt, sched, device=torch.device('cpu'), amp_dtype=None,
                           penalty=penalty_fn(model, recipe), penalty_model=model)
    return model, {n: p.grad.clone() for n, p in model.named_parameters()}, sums


def test_nam_l1_penalty_applied_for_real():
    from zamzoo.layers import NAM
    nam = get_recipe('nam')
    assert nam.nam_l1 == 1e-4
    model, with_pen, sums = _one_step(NAM, nam)
    _, without, sums0 = _one_step(NAM, nam.replace(nam_l1=0.0))
    nam_modules = [m for m in model.modules() if isinstance(m, NAM)]
    assert len(nam_modules) == 4
    gammas = {id(m.bn.weight) for m in nam_modules}
    expected = 1e-4 * sum(m.bn.weight.abs().sum() for m in nam_modules)
    assert float(sums['penalty_sum']) == pytest.approx(expected.item(), rel=1e-6)   # loss += s * sum|gamma|
    assert float(sums0['penalty_sum']) == 0.0
    assert float(sums['loss_sum']) == float(sums0['loss_sum'])                      # same CE
    for name, p in model.named_parameters():
        diff = with_pen[name] - without[name]
        if id(p) in gammas:   # d/dgamma of s*|gamma| = s*sign(gamma): the sparsity gradient reaches the BN scales
            torch.testing.assert_close(diff, 1e-4 * torch.sign(p.detach()), rtol=0, atol=1e-8)
        else:
            assert torch.equal(diff, torch.zeros_like(diff)), name
    # every recipe applies it to a model with NAM (a zoo NAM model trains under its backbone's: zam, spem), none
    # to a model without
    for recipe in ('zam', 'spem', 'finetune'):
        assert get_recipe(recipe).nam_l1 == 1e-4 and penalty_fn(model, get_recipe(recipe)) is not None
    assert penalty_fn(create_model('resnet18_plain', 10), get_recipe('zam')) is None


def test_spem_penalty_whenever_the_model_has_spem():
    from zamzoo.layers import SPEM
    zam = get_recipe('zam')                     # not SPEM's recipe: alpha 0.1 still applies to SPEM models
    assert zam.spem_alpha == 0.1
    model, with_pen, sums = _one_step(SPEM, zam)
    _, without, _ = _one_step(SPEM, zam.replace(spem_alpha=0.0))
    spems = [m for m in model.modules() if isinstance(m, SPEM)]
    assert spems
    assert float(sums['penalty_sum']) == pytest.approx(0.1 * 0.5 * len(spems), rel=1e-6)   # p = [0.5, 0.5] at init
    ps = {id(m.p) for m in spems}
    for name, p in model.named_parameters():
        diff = with_pen[name] - without[name]
        if id(p) in ps:                         # d/dp alpha * (p0^2 + p1^2) = 2 * alpha * p
            torch.testing.assert_close(diff, 2 * 0.1 * p.detach(), rtol=0, atol=1e-7)
        else:
            assert torch.equal(diff, torch.zeros_like(diff)), name
    assert penalty_fn(create_model(TINY, 10), zam) is None
    # the zoo's SPEM models are found the same way
    assert penalty_fn(create_model('resnet164_spem', 10), zam) is not None


# ------------------------------------------------------------------------------------------------ a full run

def test_one_epoch_cli_run_writes_every_artefact(tiny_cifar, tmp_path, capsys):
    out = tmp_path / 'run'
    rc = main(['train', '--model', TINY, '--data', str(tiny_cifar), '--recipe', 'zam', '--epochs', '1',
               '--batch-size', '16', '--out', str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    recipe = get_recipe('zam')
    for key in recipe.to_dict():                                 # the recipe, in full, before training
        assert key in printed
    assert 'epoch 1/1' in printed and 'img/s' in printed
    names = {p.name for p in out.iterdir()}
    assert {'config.json', 'checkpoint.pt', 'metrics.jsonl', 'curves.png', 'results.json',
            'model.safetensors'} <= names
    assert not any(n.endswith('.tmp') for n in names)

    config = json.loads((out / 'config.json').read_text())
    assert config['recipe']['name'] == 'zam' and config['recipe']['epochs'] == 1
    assert config['recipe']['milestones'] == [60, 120, 160] and config['overrides'] == {'epochs': 1, 'batch_size': 16}
    assert config['num_classes'] == 100 and config['steps_per_epoch'] == 4 and config['loader'] == 'dataloader'
    assert config['mean'] == list(recipe.stats('cifar100')[0]) and config['code_commit'] and config['tag'] == 'cifar100'
    assert config['args']['epochs'] == 1 and config['args']['model'] == TINY and config['seed'] == 0

    metrics = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]['epoch'] == 1
    m = metrics[0]
    assert m['lr'] == pytest.approx(0.1 * 4 / (4 + 1e-8))                # last warm-up step
    assert 0 <= m['test_top1'] <= m['test_top5'] <= 100 and m['train_loss'] > 0 and m['train_images'] == 64
    assert tuple(m) == ('epoch', 'lr', 'train_loss', 'train_top1', 'penalty', 'test_loss', 'test_top1', 'test_top5',
                        'test_images', 'epoch_time_s', 'train_time_s', 'train_images', 'images_per_s', 'train_end_unix',
                        'skipped_steps')
    assert m['skipped_steps'] == 0

    results = json.loads((out / 'results.json').read_text())
    for key in ('model', 'dataset', 'tag', 'num_classes', 'recipe', 'recipe_version', 'seed', 'epochs', 'top1', 'top5',
                'best_top1', 'best_top5', 'best_epoch', 'images_per_s', 'wall_time_s', 'device', 'code_commit',
                'num_params'):
        assert key in results, key
    assert results['top1'] == m['test_top1'] and results['epochs'] == 1 and results['best_epoch'] == 1
    assert 'cpu' in results['device']

    assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    from safetensors.torch import load_file
    weights = load_file(str(out / 'model.safetensors'))
    model = create_model(TINY, 100)
    model.load_state_dict(weights)                                          # strict: every key, right shapes
    ckpt = load_checkpoint(out / 'checkpoint.pt')                           # weights_only=True inside
    assert ckpt['epoch'] == 1 and set(ckpt['rng']) == {'torch', 'numpy', 'python', 'cuda'}
    assert all(torch.equal(ckpt['model'][k], v) for k, v in weights.items())

    # zamzoo eval on the run folder gives the run's own final test accuracy
    r = evaluate(TINY, tiny_cifar, 'cifar100', checkpoint=out)
    assert r['images'] == 32 and r['top1'] == pytest.approx(results['top1'])
    assert r['loss'] == pytest.approx(results['test_loss'], rel=1e-4)
    assert main(['eval', '--model', TINY, '--checkpoint', str(out / 'model.safetensors'), '--data', str(tiny_cifar)]) == 0
    printed = capsys.readouterr().out  # CIFAR's test split is not held out of anything
    assert 'top-1' in printed and '(32 images evaluated, weights ' in printed and 'held-out' not in printed


def test_image_folder_run(tmp_path):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (('train', 6), ('val', 2)):
        for c in ('a', 'b', 'c'):
            (tmp_path / 'imgs' / split / c).mkdir(parents=True)
            for i in range(n):
                arr = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(arr).save(tmp_path / 'imgs' / split / c / f'{i}.png')
    r = train(TrainConfig(model=TINY, data=str(tmp_path / 'imgs'), dataset='folder', epochs=1, batch_size=6,
                          img_size=32, out=str(tmp_path / 'run')))
    assert r['recipe'] == 'finetune' and r['num_classes'] == 3 and r['epochs'] == 1
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['classes'] == ['a', 'b', 'c'] and cfg['img_size'] == 32 and cfg['steps_per_epoch'] == 3


# ------------------------------------------------------------------------------------------------ kill + resume

def test_killed_run_resumes_to_the_same_weights(tiny_cifar, tmp_path):
    args = dict(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=4, batch_size=16, seed=7)
    full = train(TrainConfig(out=str(tmp_path / 'full'), **args))
    assert full['epochs'] == 4

    out = tmp_path / 'killed'
    cmd = [sys.executable, '-m', 'zamzoo', 'train', '--model', TINY, '--data', str(tiny_cifar), '--recipe', 'zam',
           '--epochs', '4', '--batch-size', '16', '--seed', '7', '--out', str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / 'checkpoint.pt').exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f'training subprocess ended before its first checkpoint: {proc.stderr.read().decode()[-2000:]}')
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)                               # no clean-up: as a crash or a pre-emption
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / 'results.json').exists() and not (out / 'model.safetensors').exists()
    done = load_checkpoint(out / 'checkpoint.pt')['epoch']
    assert 1 <= done < 4

    with pytest.raises(ZamzooError, match='--resume'):            # refuses to overwrite the run
        train(TrainConfig(out=str(out), **args))
    resumed = train(TrainConfig(out=str(out), resume=True, **args))
    assert resumed['epochs'] == 4

    from safetensors.torch import load_file
    a, b = load_file(str(tmp_path / 'full' / 'model.safetensors')), load_file(str(out / 'model.safetensors'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k                          # bit for bit
    history = [json.loads(x) for x in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in history] == [1, 2, 3, 4]
    full_hist = [json.loads(x) for x in (tmp_path / 'full' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['train_loss'] for r in history] == [r['train_loss'] for r in full_hist]
    assert resumed['top1'] == full['top1']


# ------------------------------------------------------------------------------------------------ DDP

def test_ddp_two_processes_match_one(tiny_cifar, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 16 = 2 x 8, against one process with batch 16.

    torch's SyncBatchNorm runs on GPUs only, so on CPU each rank's BatchNorm would normalise its own half-batch
    and the runs would legitimately differ. The comparison uses a BatchNorm-free model (timm's GroupNorm
    test_efficientnet_gn): then the two runs compute the same function, and sharding, the loss scaling and
    DDP's gradient averaging must give the same weights (up to float summation order)."""
    model = 'test_efficientnet_gn'
    common = ['--model', model, '--data', str(tiny_cifar), '--recipe', 'zam', '--epochs', '1', '--batch-size', '16',
              '--seed', '3', '--loader', 'tensor', '--device', 'cpu']
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'zamzoo', 'train', *common, '--out', str(tmp_path / 'ddp')]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'zamzoo: warning' not in proc.stderr, proc.stderr  # torch's deprecation of broadcast_buffers, as ours
    single = train(TrainConfig(model=model, data=str(tiny_cifar), recipe='zam', epochs=1, batch_size=16, seed=3,
                               loader='tensor', device='cpu', out=str(tmp_path / 'single')))
    ddp = json.loads((tmp_path / 'ddp' / 'results.json').read_text())
    cfg = json.loads((tmp_path / 'ddp' / 'config.json').read_text())
    assert ddp['world_size'] == 2 and cfg['per_rank_batch_size'] == 8 and cfg['steps_per_epoch'] == 4
    rngs = torch.load(tmp_path / 'ddp' / 'checkpoint.pt', weights_only=True)['rank_rngs']  # each rank resumes its own
    assert len(rngs) == 2 and torch.equal(rngs[0]['torch'], torch.load(
        tmp_path / 'ddp' / 'checkpoint.pt', weights_only=True)['rng']['torch'])
    from safetensors.torch import load_file
    a, b = load_file(str(tmp_path / 'ddp' / 'model.safetensors')), load_file(str(tmp_path / 'single' / 'model.safetensors'))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.equal(a[k], v) for k, v in load_file(str(_init_weights(model, tmp_path))).items())
    d_hist = json.loads((tmp_path / 'ddp' / 'metrics.jsonl').read_text().splitlines()[0])
    s_hist = json.loads((tmp_path / 'single' / 'metrics.jsonl').read_text().splitlines()[0])
    assert d_hist['train_loss'] == pytest.approx(s_hist['train_loss'], rel=1e-5)
    assert d_hist['train_images'] == s_hist['train_images'] == 64
    assert ddp['top1'] == pytest.approx(single['top1'])


_KILLED_WHILE_WRITING = """
import os, signal, time
import zamzoo.train.run_folder as run_folder

write = run_folder.write_checkpoint
killed = []


def killed_while_writing(path, state):
    if not killed:  # the first checkpoint only: the process takes SIGTERM while it is being written
        killed.append(signal.getsignal(signal.SIGTERM))
        assert killed[0] is not signal.SIG_DFL, 'SIGTERM would end the run here, its checkpoint half-written'
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
    return write(path, state)


run_folder.write_checkpoint = killed_while_writing
"""


def _killed_after_one_checkpoint(out: Path, returncode: int, expected: int):
    """A 2-epoch run killed with SIGTERM while its first checkpoint was written: that write was finished (no
    temporary file; the checkpoint and metrics.jsonl of epoch 1), the run left to resume, not failed."""
    from zamzoo.train.run_folder import run_status
    assert returncode == expected
    assert sorted(p.name for p in out.iterdir() if p.name.endswith('.tmp')) == []
    status = run_status(out)
    assert status.state == 'pending' and len(status.history) == 1
    assert load_checkpoint(out / 'checkpoint.pt')['epoch'] == 1


def test_a_run_killed_with_sigterm_finishes_the_checkpoint_it_was_writing(tiny_cifar, tmp_path, capsys):
    """`timeout`, `kill` or a job's time limit (SIGTERM) ended `zamzoo train` at once: a checkpoint the background
    writer had under way stayed as a temporary file beside the run (a checkpoint's size each time), its epoch lost;
    `zoo run` ends its local workers so when it is interrupted."""
    exec(_KILLED_WHILE_WRITING, {})
    rc = main(['train', '--model', TINY, '--data', str(tiny_cifar), '--recipe', 'zam', '--epochs', '2',
               '--batch-size', '16', '--out', str(tmp_path / 'run')])
    assert 'zamzoo train: interrupted' in capsys.readouterr().err
    _killed_after_one_checkpoint(tmp_path / 'run', rc, 130)


def test_a_sweeps_worker_killed_with_sigterm_finishes_its_checkpoint_and_dies_of_the_signal(tiny_cifar, tmp_path):
    """The local executor reads a killed worker's signal from its exit status ('killed by signal 15')."""
    config = TrainConfig(model=TINY, data=str(tiny_cifar), recipe='zam', epochs=2, batch_size=16,
                         out=str(tmp_path / 'run'))
    code = _KILLED_WHILE_WRITING + (
        'import json, sys\nfrom zamzoo.zoo.worker import main\nsys.exit(main([json.dumps(%r)]))' % config.to_dict())
    proc = subprocess.run([sys.executable, '-c', code], env=_env(), capture_output=True, text=True, timeout=300)
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    _killed_after_one_checkpoint(tmp_path / 'run', proc.returncode, -signal.SIGTERM)


_KILLED_IN_EPOCH_2 = """
import os, signal, sys
from zamzoo.cli import main
from zamzoo.train import loop

step, steps = loop._eager_step, []


class DropsItsException:
    def __del__(self):  # as in an at-fork callback (a DataLoader forking its workers), Python drops what is raised
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))


def killed_in_epoch_2(*args):
    steps.append(1)
    if len(steps) == 6:  # the second step of epoch 2 (4 a epoch), the DataLoader's workers running
        {kill}
    return step(*args)


loop._eager_step = killed_in_epoch_2
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize('kill', [
    'os.killpg(os.getpgid(0), signal.SIGTERM)',  # GNU timeout, a job's time limit: the DataLoader workers too
    'DropsItsException()',
    'DropsItsException()\n        raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")',
], ids=['process-group', 'exception-dropped', 'then-a-worker-gone'])
def test_a_run_with_dataloader_workers_killed_with_sigterm_is_interrupted_not_failed(tiny_cifar, tmp_path, kill):
    """A SIGTERM whose exception Python dropped (it came while the DataLoader forked its workers) was lost, and
    the run trained on to its end; where SIGTERM to the process group (GNU timeout, a time limit) had ended a
    DataLoader worker too, torch's 'DataLoader worker ... exited unexpectedly' marked the run failed (exit 1). The
    process-group kill here reaches the run first (exit 130 before too): a guard."""
    from zamzoo.train.run_folder import run_status
    script = tmp_path / 'killed.py'
    script.write_text(_KILLED_IN_EPOCH_2.replace('{kill}', kill))
    out = tmp_path / 'run'
    proc = subprocess.run([sys.executable, str(script), 'train', '--model', TINY, '--data', str(tiny_cifar),
                           '--recipe', 'zam', '--epochs', '3', '--batch-size', '16', '--workers', '2', '--device',
                           'cpu', '--out', str(out)], env=_env(), capture_output=True, text=True, timeout=300,
                          start_new_session=True)
    assert proc.returncode == 130 and 'zamzoo train: interrupted' in proc.stderr, proc.stderr[-3000:]
    status = run_status(out)
    assert status.state == 'pending' and len(status.history) == 1, proc.stderr[-3000:]


_RANK_1_FAILS = """
import os, signal, sys
from zamzoo.cli import main
from zamzoo.train import loop

one_epoch = loop._one_epoch


def rank_1_fails(lp, epoch):
    if epoch == {epoch} and lp.info.rank == 1:
        {failure}
    return one_epoch(lp, epoch)


loop._one_epoch = rank_1_fails
sys.exit(main(sys.argv[1:]))
"""


def _rank_1_fails(tiny_cifar, tmp_path, failure: str, epochs: int):
    """`zamzoo train` under torchrun, 2 CPU processes, rank 1 running `failure` in its last epoch: the run's status,
    after torchrun exited nonzero."""
    from zamzoo.train.run_folder import run_status
    script = tmp_path / 'rank_1_fails.py'
    script.write_text(_RANK_1_FAILS.format(epoch=epochs - 1, failure=failure))
    out = tmp_path / 'ddp'
    # torchrun looks at its processes every 0.1 s by default and then ends the survivors (SIGTERM: an interruption,
    # which records nothing); on a busy machine that came before rank 0 met the loss of rank 1 in its next step
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '--monitor-interval', '5', str(script), 'train', '--model', TINY, '--data', str(tiny_cifar), '--recipe',
           'zam', '--epochs', str(epochs), '--batch-size', '16', '--loader', 'tensor', '--device', 'cpu', '--out',
           str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr[-3000:]
    status = run_status(out)
    assert status.state == 'failed' and len(status.history) == epochs - 1, proc.stderr[-3000:]
    return status


def test_a_run_of_two_processes_records_the_error_of_the_one_that_failed(tiny_cifar, tmp_path):
    """Rank 1 raised; rank 0, the one that wrote failed.json, recorded gloo's "Connection closed by peer" instead (or
    torchrun stops it first on a busy machine: either way the record is rank 1's)."""
    status = _rank_1_fails(tiny_cifar, tmp_path, "raise ValueError('the real error, on rank 1')", epochs=1)
    assert status.error == 'rank 1: ValueError: the real error, on rank 1' and status.error_type == 'ValueError'


def test_a_killed_rank_is_not_recorded_as_the_survivors_failure(tiny_cifar, tmp_path):
    """Rank 1 killed as the kernel's OOM killer ends a process (no word from it): rank 0's gloo 'Connection reset by
    peer' was recorded as rank 0's own RuntimeError."""
    status = _rank_1_fails(tiny_cifar, tmp_path, 'os.kill(os.getpid(), signal.SIGKILL)', epochs=2)
    assert status.error.startswith('rank 0: PeerLost: lost its connection to another process of the run, which '
                                   'ended without recording an error (killed by a signal? out of memory?)'), status


def _init_weights(model, tmp_path):
    """The weights before training (same seed), to show that training moved them."""
    from safetensors.torch import save_file
    torch.manual_seed(3)
    m = create_model(model, 100)
    path = tmp_path / 'init.safetensors'
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize('flags, expected', [
    (['--epochs', '0'], 'expected a positive integer'),
    (['--batch-size', 'x'], 'expected a positive integer'),
    (['--amp', 'fp8'], 'invalid choice'),
    (['--recipe', 'nope'], 'invalid choice'),
    (['--dataset', 'imagenet'], 'invalid choice'),
    (['--lr', '-1'], 'expected a positive (finite) number'),
    (['--lr', 'inf'], 'expected a positive (finite) number, got inf'),
])
def test_train_rejects_an_invalid_flag_value_with_exit_2_and_says_what_was_expected(tiny_cifar, capsys, flags,
                                                                                  expected):
    with pytest.raises(SystemExit) as e:
        main(['train', '--model', TINY, '--data', str(tiny_cifar), *flags])
    assert e.value.code == 2
    assert expected in capsys.readouterr().err


def test_bad_paths_and_settings(tiny_cifar, tmp_path, capsys):
    def run(*argv):
        rc = main(list(argv))
        return rc, capsys.readouterr().err

    rc, err = run('train', '--model', TINY, '--data', str(tmp_path / 'nothing'))
    assert rc == 2 and 'cifar-100-python/{train,test,meta}' in err and 'Traceback' not in err
    rc, err = run('train', '--model', TINY, '--data', str(tmp_path / 'nothing'), '--dataset', 'cifar10')
    assert rc == 2 and 'cifar-10-batches-py/{data_batch_1' in err
    rc, err = run('train', '--model', TINY, '--data', str(tmp_path), '--dataset', 'folder')
    assert rc == 2 and 'train/<class>/<image>' in err
    rc, err = run('train', '--model', 'resnet18_zma', '--data', str(tiny_cifar))
    assert rc == 2 and "unknown model 'resnet18_zma'" in err and 'resnet18_zam' in err
    rc, err = run('train', '--model', TINY, '--data', str(tiny_cifar), '--resume', '--out', str(tmp_path / 'none'))
    assert rc == 2 and 'no checkpoint to resume' in err and 'without --resume' not in err
    (tmp_path / 'started').mkdir()
    (tmp_path / 'started' / 'config.json').write_text('{}')  # a run killed before its first checkpoint
    rc, err = run('train', '--model', TINY, '--data', str(tiny_cifar), '--resume', '--out', str(tmp_path / 'started'))
    assert rc == 2 and 'the run there finished no epoch; the same command without --resume starts it' in err
    rc, err = run('train', '--model', TINY, '--data', str(tiny_cifar), '--amp', 'fp16', '--device', 'cpu')
    assert rc == 2 and 'fp16 needs CUDA' in err
    rc, err = run('eval', '--model', TINY, '--checkpoint', str(tmp_path / 'missing.safetensors'), '--data',
                  str(tiny_cifar))
    assert rc == 2 and 'missing.safetensors' in err
    with pytest.raises(SystemExit):
        main(['eval', '--model', TINY, '--pretrained', '--checkpoint', 'x', '--data', str(tiny_cifar)])
    with pytest.raises(ValueError, match='expected one of'):
        TrainConfig(model=TINY, data='.', loader='gpu').validate()
    TrainConfig(model=TINY, data='.', dataset='folder', loader='tensor').validate()  # any data set (issue 13)
    with pytest.raises(ValueError, match='holdout: only for --dataset folder or hf'):
        TrainConfig(model=TINY, data='.', holdout=0.1).validate()
    with pytest.raises(ValueError, match='image_column: only for --dataset hf'):
        TrainConfig(model=TINY, data='.', dataset='folder', image_column='img').validate()


# ------------------------------------------------------------------------------------------------ bench train

def test_bench_train_small(tmp_path, capsys):
    assert main(['bench', 'train', '--model', TINY, '--device', 'cpu', '--images', '32', '--batch-size', '16',
                 '--workers', '0', '--warmup-steps', '0', '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'speedup' in out and 'reference' in out
    r = json.loads((tmp_path / f'train-{TINY}-cpu-b16-zam-none.json').read_text())
    assert r['images'] == 32 and r['batch_size'] == 16 and r['ours']['steps'] == 2
    assert r['ours']['images_per_s'] > 0 and r['reference']['images_per_s'] > 0
    assert r['speedup'] == pytest.approx(r['ours']['images_per_s'] / r['reference']['images_per_s'])
    # another setting is another file: the first measurement stays (both wrote train-<model>-cpu.json)
    assert main(['bench', 'train', '--model', TINY, '--device', 'cpu', '--images', '32', '--batch-size', '16',
                 '--warmup-steps', '0', '--amp', 'bf16', '--no-reference', '--out', str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f'train-{TINY}-cpu-b16-zam-{amp}.json' for amp in ('bfloat16', 'none')]

