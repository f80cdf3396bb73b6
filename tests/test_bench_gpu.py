"""`zamzoo bench gpu` end to end on a CPU with tiny sizes, the GPU-wait arithmetic, `zoo run --runs-per-gpu auto`
and `zoo run --dry-run`'s cost from a measured file (issue 20 items 1-2)."""
import json
import os
import shlex

import pytest

from zamzoo.bench import gpu
from zamzoo.cli import build_parser, main
from zamzoo.errors import UsageError
from zamzoo.zoo import local

pytestmark = pytest.mark.usefixtures('single_thread')


def test_bench_gpu_on_cpu_writes_every_part_with_its_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # the zoo part's processes too run on one thread (single_thread)
    out = tmp_path / 'bench'
    assert main(['bench', 'gpu', '--device', 'cpu', '--models', 'mobilenet_zam', '--modes', 'eager', 'reduce-overhead',
                 '--runs-per-gpu', '1', '--batch-size', '8', '--steps', '2', '--warmup-steps', '1', '--epochs', '2',
                 '--zoo-images', '16', '--out', str(out)]) == 0
    report = json.loads((out / 'gpu_cpu.json').read_text())
    assert report['device_type'] == 'cpu' and report['command'].startswith('zamzoo bench gpu ')
    eager, graphs = report['train']
    assert (eager['model'], eager['mode'], graphs['mode']) == ('mobilenet_zam', 'eager', 'reduce-overhead')
    assert eager['images_per_s'] > 0 and eager['steps'] == 2
    assert 'CUDA' in graphs['skipped'] and 'images_per_s' not in graphs        # skipped with its reason, not faked
    p = report['profile']
    assert p['model'] == 'resnet18_zam' and p['step_ms'] > 0 and p['gpu_wait_share'] is None and p['gpu_wait_skipped']
    assert p['top'] and all(t['self_ms'] >= 0 and t['calls'] >= 1 for t in p['top'])
    assert 'zamzoo.step' not in [t['name'] for t in p['top']]
    (zoo,) = report['zoo']
    assert zoo['runs_per_gpu'] == 1 and len(zoo['run_steady_images_per_s']) == 1
    assert zoo['sum_of_run_rates'] > 0 and zoo['aggregate_with_startup'] > 0
    assert zoo['overlap'] == 1.0 and zoo['window_images_per_s'] == pytest.approx(zoo['sum_of_run_rates'])  # 1 epoch
    assert zoo['window_s'] > 0
    for cmd in (eager['command'], graphs['command'], zoo['command']):     # every figure's command parses as given
        build_parser().parse_args(shlex.split(cmd)[1:])
    md = (out / 'gpu_cpu.md').read_text()
    assert '| mobilenet_zam | ' in md and 'skipped, CUDA graphs' in md and eager['command'] in md
    assert gpu.GPU_WAIT_DEFINITION in md and zoo['command'] in md
    assert f"wrote {out / 'gpu_cpu.json'}" in capsys.readouterr().out


def test_a_spent_budget_skips_and_still_writes(tmp_path):
    s = gpu.GpuBenchSettings(models=['mobilenet_zam'], modes=['eager'], runs_per_gpu=[1, 2], batch_size=8,
                             zoo_images=16, device='cpu', budget_s=0, out=str(tmp_path))
    report = gpu.bench_gpu(s, 'cmd', progress=lambda line: None)
    cells = [*report['train'], report['profile'], *report['zoo']]
    assert len(cells) == 4 and all('time budget' in c['skipped'] for c in cells)
    assert '| 2 | skipped |' in (tmp_path / 'gpu_cpu.md').read_text()
    with pytest.raises(ValueError, match='at least 2'):
        gpu.GpuBenchSettings(epochs=1).validate()


def test_zoo_mps_goes_to_zoo_run_and_into_the_report(tmp_path):
    """--zoo-mps: the zoo runs get --mps (on a CPU, refused: MPS needs a GPU), the figure's command says so, the
    report carries the daemon's log lines (here: none) and its title says whether the runs shared the GPU under MPS."""
    s = gpu.GpuBenchSettings(models=['mobilenet_zam'], modes=[], runs_per_gpu=[2], batch_size=8, zoo_images=16,
                             profile=False, zoo_mps=True, device='cpu', out=str(tmp_path))
    report = gpu.bench_gpu(s, 'cmd', progress=lambda line: None)
    (zoo,) = report['zoo']
    assert zoo['mps'] and '--mps' in shlex.split(zoo['command'])
    assert 'MPS shares a GPU between processes' in zoo['error'] and zoo['mps_control_log'] == ['(no control.log)']
    md = (tmp_path / 'gpu_cpu.md').read_text()
    assert 'eager step, under CUDA MPS (`--mps`)' in md and "last lines: `(no control.log)`" in md


def _epochs(*passes):
    """metrics records of one run: (end time, training seconds, images) per epoch."""
    return [{'train_end_unix': end, 'train_time_s': t, 'train_images': n} for end, t, n in passes]


def test_zoo_window_counts_the_runs_together_only_where_they_overlapped():
    # two runs with 100-image epochs after a first one; run b starts its second epoch 10 s after run a's ends
    a = _epochs((5, 5, 100), (10, 5, 100), (15, 5, 100))      # its epochs after the first: 5 .. 15
    b = _epochs((20, 5, 100), (25, 5, 100), (30, 5, 100))     # 20 .. 30
    w = gpu.zoo_window([a, b])
    assert w['window_s'] == 25 and w['overlap'] == 0.0          # 5 .. 30, never both
    assert w['window_images_per_s'] == pytest.approx(400 / 25)  # 16 images/s, though each run alone did 20
    together = gpu.zoo_window([a, _epochs((5, 5, 100), (10, 5, 100), (15, 5, 100))])
    assert together == {'window_s': 10, 'window_images_per_s': 40.0, 'overlap': 1.0}
    half = gpu.zoo_window([a, _epochs((10, 5, 100), (15, 5, 100), (20, 5, 100))])  # 5 .. 15 and 10 .. 20
    assert half['overlap'] == pytest.approx(5 / 15) and half['window_images_per_s'] == pytest.approx(400 / 15)


def test_zoo_markdown_of_a_file_without_the_window_says_so():
    old = {'runs_per_gpu': 2, 'run_steady_images_per_s': [7000.0, 8000.0], 'steady_images_per_s': 15000.0,
           'aggregate_with_startup': 2400.0, 'wall_s': 32.0, 'command': 'zamzoo zoo run ...'}
    md = '\n'.join(gpu._zoo_markdown({'zoo': [old], 'settings': {'zoo_images': 128}}))
    assert '| 2 | not recorded | 15,000 | 7,000, 8,000 | 2,400 | 32 |' in md
    assert 'whether they trained at the same time is unknown' in md


def test_gpu_wait_share_is_the_step_not_covered_by_device_activity():
    busy = [(10, 30), (20, 40), (90, 120), (-5, 2), (50, 50)]   # overlapping, outside the step, empty
    assert gpu.gpu_wait_share((0, 100), busy) == pytest.approx(1 - (2 + 30 + 10) / 100)
    assert gpu.gpu_wait_share((0, 100), []) == 1.0
    assert gpu.gpu_wait_share((0, 100), [(0, 100), (10, 20)]) == 0.0


def test_top_device_work_sums_each_kernel_over_its_launches():
    from types import SimpleNamespace as E
    work = [E(name='gemm', time_range=E(start=0, end=3000)), E(name='relu', time_range=E(start=3000, end=3500)),
            E(name='gemm', time_range=E(start=4000, end=6000))]
    assert gpu._top_device_work(work) == [{'name': 'gemm', 'calls': 2, 'self_ms': 5.0},
                                          {'name': 'relu', 'calls': 1, 'self_ms': 0.5}]


def test_runs_per_gpu_auto(tiny_cifar, tmp_path, monkeypatch, capsys):
    GiB = 1 << 30
    assert local.runs_that_fit(80 * GiB, 2 * GiB, GiB // 5, cpus=16, gpu_groups=1) == 16     # by the CPU cores
    assert local.runs_that_fit(10 * GiB, 2 * GiB, GiB // 5, cpus=16, gpu_groups=1) == 2      # 10 / 3.7 GiB
    assert local.runs_that_fit(80 * GiB, 2 * GiB, GiB // 5, cpus=16, gpu_groups=8) == 2
    assert local.runs_that_fit(GiB, 2 * GiB, 0, cpus=16, gpu_groups=1) == 1                 # never 0
    # by the GPU's time: an eager step that keeps it busy 17% of the time, a captured one 95%
    assert local.runs_that_fit(80 * GiB, 2 * GiB, GiB // 5, cpus=16, gpu_groups=1, busy_share=0.17) == 6
    assert local.runs_that_fit(80 * GiB, 2 * GiB, GiB // 5, cpus=16, gpu_groups=1, busy_share=0.95) == 1
    assert local.runs_that_fit(10 * GiB, 2 * GiB, GiB // 5, cpus=16, gpu_groups=1, busy_share=0.17) == 2
    monkeypatch.setattr(local, 'visible_gpus', lambda: [])                                  # a CPU-only machine
    seen = {}

    def fake_sweep(runs, out, **kw):
        seen.update(kw)
        return {'skipped': {'failed': 0}, 'finished': False, 'launched': len(runs)}
    monkeypatch.setattr('zamzoo.zoo.sweep.run_sweep', fake_sweep)
    args = ['zoo', 'run', '--models', 'mobilenet_zam', '--seeds', '0', '--data', str(tiny_cifar), '--out',
            str(tmp_path / 'sweep'), '--runs-per-gpu', 'auto']
    assert main(args) == 0 and seen['runs_per_gpu'] == 1
    assert '--runs-per-gpu auto: 1' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args[:-1], 'many'])


def test_runs_per_gpu_auto_probes_the_runs_own_step(tiny_cifar, tmp_path, monkeypatch, capsys):
    """The wiring on a faked GPU: the probe gets the run's model, batch and step (--cuda-graph), its peak memory and
    busy share decide; an fp16 run (no capture) is probed eagerly."""
    import torch
    from zamzoo.bench import gpu as bench_gpu
    GiB, probes = 1 << 30, []

    def fake_probe(model, **kw):
        probes.append((model, kw['batch_size'], kw['cuda_graph'], kw['amp']))
        if kw['cuda_graph'] and kw['amp'] == 'fp16':
            raise UsageError('--cuda-graph: fp16 needs the GradScaler')
        return {'device_events': 100, 'gpu_wait_share': 0.05 if kw['cuda_graph'] else 0.8}
    monkeypatch.setattr(local, 'visible_gpus', lambda: ['0'])
    monkeypatch.setattr(bench_gpu, 'profile_training_steps', fake_probe)
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device=None: (100 * GiB, 140 * GiB))
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats', lambda device=None: None)
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device=None: 2 * GiB)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    monkeypatch.setattr(local.os, 'cpu_count', lambda: 16)
    seen = {}
    monkeypatch.setattr('zamzoo.zoo.sweep.run_sweep', lambda runs, out, **kw: seen.update(kw) or
                        {'skipped': {'failed': 0}, 'finished': False, 'launched': len(runs)})
    args = ['zoo', 'run', '--models', 'mobilenet_zam', '--seeds', '0', '--data', str(tiny_cifar), '--out',
            str(tmp_path / 'sweep'), '--runs-per-gpu', 'auto', '--batch-size', '64']
    assert main([*args, '--cuda-graph']) == 0 and seen['runs_per_gpu'] == 1         # busy 95%: one run fills it
    assert probes == [('mobilenet_zam', 64, True, 'auto')]
    assert 'the GPU busy 95% of a step' in capsys.readouterr().out
    assert main(args) == 0 and seen['runs_per_gpu'] == 5                              # busy 20%: 5 runs
    assert main([*args, '--cuda-graph', '--amp', 'fp16']) == 0 and seen['runs_per_gpu'] == 5
    assert probes[-2:] == [('mobilenet_zam', 64, True, 'fp16'), ('mobilenet_zam', 64, False, 'fp16')]
    capsys.readouterr()
    assert main([*args, '--cuda-graph', '--mps']) == 0 and seen['runs_per_gpu'] == 16 and seen['mps']  # cores
    assert 'under MPS the busy share sets no limit' in capsys.readouterr().out


def test_profile_training_steps_on_cpu():
    from zamzoo.recipes import get_recipe
    import torch
    p = gpu.profile_training_steps('mobilenet_zam', device=torch.device('cpu'), batch_size=4,
                                   recipe=get_recipe('zam'), warmup_steps=1, steps=2, num_classes=10)
    assert (p['steps'], p['warmup_steps'], p['cuda_graph'], p['gpu_wait_share']) == (2, 1, False, None)
    assert p['step_ms'] > 0 and p['top'] and 'zamzoo.step' not in [t['name'] for t in p['top']]


def _measured(folder, cells, device_type='cuda'):
    folder.mkdir()
    report = {'benchmark': 'gpu', 'device_type': device_type, 'device': 'NVIDIA H200 (cuda)', 'measured': '2026-12-04',
              'train': [dict(model=m, mode=mode, **r) for m, mode, r in cells]}
    (folder / 'gpu_nvidia_h200.json').write_text(json.dumps(report))


def test_dry_run_cost_from_the_measured_file(tiny_cifar, tmp_path, monkeypatch, capsys):
    folder = tmp_path / 'bench'
    _measured(folder, [('mobilenet_plain', 'eager', {'images_per_s': 5000.0}),  # faster: not for other models
                       ('mobilenet_zam', 'eager', {'images_per_s': 2500.0}),
                       ('mobilenet_zam', 'default', {'images_per_s': 5000.0}),
                       ('mobilenet_zam', 'cuda-graph', {'images_per_s': 10000.0}),
                       ('mobilenet_zam', 'reduce-overhead', {'images_per_s': 20000.0}),
                       ('resnet18_zam', 'eager', {'error': 'OutOfMemoryError'})])
    monkeypatch.setattr(gpu, 'DEFAULT_RESULTS', folder)
    args = ['zoo', 'run', '--models', 'mobilenet_zam_max', '--datasets', 'cifar100', 'cifar10',
            '--seeds', '0', '1', '2', '--epochs', '3', '--data', str(tiny_cifar), '--out', str(tmp_path / 'sweep'), '--dry-run']
    assert main(args) == 0
    printed = capsys.readouterr().out
    # 6 runs x 3 epochs x 50,000 images / 2,500 images/s = 360 s = 0.1 GPU-hours
    assert 'cost: 0.10 GPU-hours for 6 run(s), at least 0.02 h on one 8-GPU node' in printed  # its longest run
    assert f"{folder / 'gpu_nvidia_h200.json'} on NVIDIA H200" in printed and 'mobilenet_zam 2,500' in printed
    plain = [*args[:3], 'mobilenet_plain', *args[4:]]
    assert main(plain) == 0 and 'cost: 0.05 GPU-hours' in capsys.readouterr().out           # a model at its own rate
    assert main([*args, '--compile']) == 0
    assert 'cost: 0.05 GPU-hours' in capsys.readouterr().out
    assert main([*args, '--cuda-graph']) == 0                                             # each mode its own figure
    printed = capsys.readouterr().out
    assert 'cost: 0.03 GPU-hours' in printed and 'measured (cuda-graph)' in printed
    assert main([*args, '--cuda-graph', '--compile']) == 0                                # graph + compile: not measured
    printed = capsys.readouterr().out
    assert 'no cuda-graph + default figure for backbone(s) mobilenet' in printed and 'cost: unknown' in printed
    assert main([*args, '--compile', '--compile-mode', 'reduce-overhead']) == 0
    assert 'cost: 0.01 GPU-hours' in capsys.readouterr().out
    assert main([*args, '--compile', '--compile-mode', 'max-autotune']) == 0               # never measured
    printed = capsys.readouterr().out
    assert 'no max-autotune figure for backbone(s) mobilenet' in printed and 'cost: unknown' in printed
    assert main([*args, '--models', 'resnet18_se']) == 0                                   # its backbone failed
    printed = capsys.readouterr().out
    assert 'no eager figure for backbone(s) resnet18' in printed and 'cost: unknown' in printed
    assert main([*args, '--images-per-second', '1000']) == 0                              # the given figure wins
    assert 'cost: 0.25 GPU-hours' in capsys.readouterr().out

    empty = tmp_path / 'cpu-only'
    _measured(empty, [('mobilenet_zam', 'eager', {'images_per_s': 9.0})], device_type='cpu')
    monkeypatch.setattr(gpu, 'DEFAULT_RESULTS', empty)                                    # a CPU file is no GPU figure
    assert main(args) == 0 and 'cost: unknown' in capsys.readouterr().out


def test_an_interrupted_zoo_run_gets_time_to_clean_up(tmp_path, monkeypatch):
    """bench gpu interrupted (Ctrl-C, the script's `timeout`) while its `zoo run` child works: the child is given time
    to stop its runs and quit its MPS daemon (here: it takes SIGTERM, cleans up for 0.2 s and leaves a mark), where
    subprocess.run would have killed it 0.25 s after the interrupt."""
    import signal
    import sys
    import threading
    import time
    monkeypatch.setattr(gpu, 'STOP_GRACE_S', 2.0)
    mark = tmp_path / 'cleaned-up'
    child = ('import signal, sys, time\n'
             'def stop(*a):\n'
             f'    time.sleep(0.2); open({str(mark)!r}, "w").close(); sys.exit(1)\n'
             'signal.signal(signal.SIGTERM, stop)\n'
             'time.sleep(30)\n')
    # Ctrl-C as in a terminal: a pytest started with SIGINT ignored (`cmd &` in a script) would never raise it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            gpu._run_to_the_end([sys.executable, '-c', child], dict(os.environ))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert mark.exists() and time.monotonic() - t0 < 10


def test_the_sweeps_price_reads_the_newest_cuda_report_and_refuses_a_broken_one(tmp_path):
    """A truncated gpu_*.json made `zoo run --dry-run` end in a JSONDecodeError traceback, and a train cell without
    'mode' in a KeyError."""
    def report(measured, rate, **cell):
        return {'device_type': 'cuda', 'measured': measured, 'device': 'H', 'train': [
            {'model': 'resnet18_zam', 'mode': 'eager', 'images_per_s': rate}, {'model': 'resnet18_zam'},
            {'mode': 'eager', 'images_per_s': 5.0}, {'model': 'mobilenet_zam', 'mode': 'eager', 'images_per_s': None},
            dict({'model': 'resnet18_se', 'mode': 'eager'}, **cell)]}

    (tmp_path / 'gpu_old.json').write_text(json.dumps(report('2026-01-01', 100.0)))
    (tmp_path / 'gpu_new.json').write_text(json.dumps(report('2026-02-01', 300.0, images_per_s=200.0)))
    (tmp_path / 'gpu_cpu.json').write_text(json.dumps(dict(report('2027-01-01', 1.0), device_type='cpu')))
    measured = gpu.measured_train_throughput(tmp_path)
    assert measured['by_model'] == {'resnet18_zam': 300.0, 'resnet18_se': 200.0}
    assert measured['rates'] == {'resnet18': 200.0} and measured['path'] == str(tmp_path / 'gpu_new.json')
    (tmp_path / 'gpu_cut.json').write_text('{"device_type": "cuda", "train": [')
    with pytest.raises(UsageError, match=r'gpu_cut.json is not valid JSON: .*: the `zamzoo bench gpu` reports there '
                                         r'price the sweep; fix or remove it'):
        gpu.measured_train_throughput(tmp_path)
