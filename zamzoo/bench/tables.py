"""The model tables of README.md and MODEL_CARD.md, generated from `zamzoo bench models` JSON reports and the
weights manifest (``zamzoo.pretrained.load_manifest()``): no number in them is typed by hand.

Each generated block sits between two markers, ``<!-- zamzoo:<block>:start -->`` and
``<!-- zamzoo:<block>:end -->``; everything outside the markers is left alone. Blocks:

- ``models-table`` (README.md and MODEL_CARD.md): one row per model: params, MACs, seed-convention FLOPs,
  measured latency overhead against the plain backbone per device, top-1 per data set where the manifest has
  published weights with results ("not yet trained" otherwise), and per data set the top-1 difference to the plain
  backbone paired by seed with its 95% interval (``zamzoo.pairing``; "–" until both have >= 2 seeds in common).
- ``overhead`` (MODEL_CARD.md): what the latency was measured on, with which command and when, and the
  per-setting times of every measured model.
- ``recipes`` (MODEL_CARD.md): the training recipes of ``zamzoo.recipes`` and the backbones using each.
- ``zoo`` (MODEL_CARD.md): how many models, from which backbones and attentions (the zoo table's).
- ``citations`` (README.md: a list; MODEL_CARD.md: BibTeX): the papers of the zoo table (``zamzoo.models._papers``).

Run: ``zamzoo bench tables`` (or ``python -m zamzoo.bench.tables``), by default over ``docs/bench/*.json``.
"""
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .._io import read_json_object, write_text_atomic
from ..dataset_table import CIFAR_DATASETS, DATASETS as DATASET_TABLE
from ..errors import NotFoundError, UsageError
from ..pairing import paired_by_seed
from .models import KIND, entry_ratio, fmt_count, load_average_text

REPO_ROOT = Path(__file__).resolve().parents[2]
# a checkout's docs/bench, README.md, MODEL_CARD.md; installed (no pyproject.toml beside the package), the current
# folder's: never a file inside site-packages
_HOME = REPO_ROOT if (REPO_ROOT / 'pyproject.toml').is_file() else Path()
DEFAULT_RESULTS = _HOME / 'docs' / 'bench'
DEFAULT_README = _HOME / 'README.md'
DEFAULT_MODEL_CARD = _HOME / 'MODEL_CARD.md'
DATASETS = tuple((name, DATASET_TABLE[name].display_name) for name in CIFAR_DATASETS)  # the tagged ones
NOT_TRAINED = 'not yet trained'
NO_PAIRS = '–'  # no top-1 vs plain: a side unpublished, or fewer than two seeds in common


def marker(block: str, end: bool = False) -> str:
    return f"<!-- zamzoo:{block}:{'end' if end else 'start'} -->"


REPORT_FIELDS = ('created', 'device', 'settings', 'results')
# what the tables read of a report's parts (a report with latency: its settings, rows and their latency entries too)
DEVICE_FIELDS = ('type',)
ROW_FIELDS = ('model', 'baseline', 'params', 'macs', 'seed_flops')
LATENCY_SETTINGS_FIELDS = ('repeats',)
LATENCY_FIELDS = ('ms', 'baseline_ms', 'samples_ms', 'baseline_samples_ms')


def load_reports(paths: Iterable) -> List[Dict]:
    """Read bench reports (files, or folders whose `zamzoo bench models` reports are read, whatever their --name;
    the folder's other JSON files, such as `bench gpu`'s, are passed over), oldest first."""
    reports = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise NotFoundError(f'bench results not found: {path} (run `zamzoo bench models --out DIR` first)')
        for f in (sorted(path.glob('*.json')) if path.is_dir() else [path]):
            data = _read_report(f, required=not path.is_dir())
            if data is not None:
                reports.append(data)
    if not reports:
        raise UsageError(f'no bench reports in {[str(p) for p in paths]}')
    return sorted(reports, key=lambda r: r['created'])


def _read_report(f: Path, required: bool) -> Optional[Dict]:
    """The `zamzoo bench models` report in file `f`; None for another JSON file unless `required`."""
    data = read_json_object(f, UsageError)  # strict: a NaN or an infinity is refused
    if data.get('kind') != KIND:
        if not required:
            return None
        raise UsageError(f"{f} is not a `zamzoo bench models` report (expected \"kind\": \"{KIND}\")")
    missing = _missing_fields(data)
    if missing:
        raise UsageError(f"{f} is an incomplete `zamzoo bench models` report: no {', '.join(missing)}")
    return dict(data, _source=f)


def _missing_fields(data: dict) -> List[str]:
    """The fields the tables read that the report lacks, as 'settings.repeats' or 'results[3].latency.infer_b1.ms'
    (a part that is not an object lacks all of its fields)."""
    missing = [repr(k) for k in REPORT_FIELDS if k not in data]
    if missing:
        return missing
    settings = data['settings'] if isinstance(data['settings'], dict) else {}
    parts = [('device', data['device'], DEVICE_FIELDS)]
    parts += [('settings', settings, LATENCY_SETTINGS_FIELDS)] if settings.get('latency') else []
    for i, row in enumerate(data['results'] if isinstance(data['results'], list) else [None]):
        parts.append((f'results[{i}]', row, ROW_FIELDS))
        latency = row.get('latency') if isinstance(row, dict) else None
        for setting, entry in (latency.items() if isinstance(latency, dict) else ()):
            parts.append((f'results[{i}].latency.{setting}', entry, LATENCY_FIELDS))
    return [f'{where}.{k}' for where, part, fields in parts
            for k in fields if not isinstance(part, dict) or k not in part]


def _latency(reports: Sequence[Dict]) -> Dict[Tuple[str, str, str, Optional[int]], Dict[str, Dict[str, Dict]]]:
    """(device type, timer, runtime, CPU threads or None) -> model -> 'infer_b1' / 'infer_b64' / ... -> the latest
    measurement of that setting (runs may measure the batch sizes separately; one thread and torch's default threads
    are separate columns)."""
    out: Dict[Tuple[str, str, str, Optional[int]], Dict[str, Dict[str, Dict]]] = {}
    for report in reports:  # oldest first: later reports win
        if not report['settings'].get('latency'):
            continue
        for row in report['results']:
            for setting, lat in (row.get('latency') or {}).items():
                runtime = lat.get('runtime', 'torch')
                device = report['device']
                threads = device.get('threads') if device['type'] == 'cpu' else None
                key = (device['type'], report['settings'].get('timer', 'wall'), runtime, threads)
                plain_setting = setting[len(runtime) + 1:] if setting.startswith(runtime + '_') else setting
                out.setdefault(key, {}).setdefault(row['model'], {})[plain_setting] = lat
    return out


def _timing_label(key: Tuple[str, str, str, Optional[int]]) -> str:
    device, timer, runtime, threads = key
    label = f'{device.upper()} latency' if timer == 'wall' else 'CPU time'
    label += f", {threads} thread{'s' if threads != 1 else ''}" if threads else ''
    return label + RUNTIME_LABELS.get(runtime, '') + ' vs plain (b1 / b64)'


def _pct(latency: Dict) -> str:
    return f'{(entry_ratio(latency) - 1) * 100:+.1f}%'


def _top1(record: Optional[Dict]) -> str:
    if not record:
        return NOT_TRAINED
    mean = record.get('top1_mean')
    if mean is None:
        return f"published ({record.get('hub_commit', '?')[:7]}), no results"
    std = record.get('top1_std')
    n = len(record.get('seeds') or [])
    text = f'{mean:.2f}' + (f' ± {std:.2f}' if std is not None and n > 1 else '')
    return text + (f' ({n} seeds)' if n > 1 else '')


def _vs_plain(name: str, tag: str, by_key: Dict[Tuple[str, str], Dict]) -> str:
    """Top-1 of `name` minus its plain backbone's on data set `tag`, paired by seed: '+0.42 [-0.10, +0.94]'."""
    from zamzoo.models import ZOO
    from ..pretrained import top1_by_seed

    entry = ZOO.get(name)
    if entry is None:
        return NO_PAIRS
    if entry.baseline == name:
        return '0 (plain)'
    model, plain = by_key.get((name, tag)), by_key.get((entry.baseline, tag))
    test = paired_by_seed(top1_by_seed(model), top1_by_seed(plain)) if model and plain else None
    if test is None:
        return NO_PAIRS
    if test.diff_ci is None:  # equal differences, too few pairs for the sign test's interval (zamzoo.pairing)
        return f'{test.diff_mean:+.2f} (no 95% interval: {test.n} equal differences)'
    return f'{test.diff_mean:+.2f} [{test.diff_ci[0]:+.2f}, {test.diff_ci[1]:+.2f}]'


RUNTIME_LABELS = {'onnxruntime': ', ONNX Runtime', 'compile': ', torch.compile'}
COMPILE_NOTE = (' torch.compile: the model through `torch.compile` (inductor, default mode), against the plain '
                'backbone compiled alike, timed in the same run as eager PyTorch (`zamzoo bench models --runtime '
                'compile`).')
ORT_NOTE = (' ONNX Runtime: the model exported with timm\'s `onnx_export` (dynamo exporter), against the plain '
            'backbone exported alike, timed in the same run as eager PyTorch (`zamzoo bench models --runtime '
            'onnxruntime`).')


def _zoo_rows(reports: Sequence[Dict]) -> Dict[str, Dict]:
    """model -> its newest counts row, for the zoo's own models in the zoo's order (backbone by backbone, plain
    first, then the attentions in registry order). A warning names the rows left out (a plugin's, or a model no
    longer in the zoo) and the zoo models no report has a row of."""
    from zamzoo.models import ZOO

    rows = {row['model']: row for report in reports for row in report['results']}  # oldest first: later win
    own = [name for name, entry in ZOO.items() if entry.attention.plugin is None]
    missing, other = [n for n in own if n not in rows], sorted(set(rows) - set(own))
    if missing:
        warnings.warn(f"the bench reports have no row of {len(missing)} of the zoo's {len(own)} models "
                      f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}), which the Models table "
                      f'leaves out: `zamzoo bench models --counts-only --out DIR` counts them all', stacklevel=3)
    if other:
        warnings.warn(f"the Models table lists the zoo's own models: the rows of {', '.join(other)} in the bench "
                      f'reports are left out (a plugin\'s, or no longer in the zoo)', stacklevel=3)
    return {name: rows[name] for name in own if name in rows}


def models_table(reports: Sequence[Dict], records: Sequence[Dict]) -> str:
    counts = _zoo_rows(reports)
    latency = _latency(reports)
    # eager PyTorch first, each runtime's thread counts side by side
    devices = sorted(latency, key=lambda k: (k[0], k[2] != 'torch', k[2], k[3] or 0, k[1]))
    by_key = {(r['model'], r['tag']): r for r in records}
    head = ['model', 'params', 'MACs', 'FLOPs (seed conv.)', *map(_timing_label, devices),
            *(f'top-1 {label}' for _, label in DATASETS),
            *(f'top-1 vs plain {label} (95% CI)' for _, label in DATASETS)]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' + '---:|' * 3 + '---:|' * len(devices)
             + '---|' * len(DATASETS) * 2]
    for name, row in counts.items():
        delta = row['params'] - row.get('baseline_params', row['params'])
        params = f"{row['params'] / 1e6:.2f}M" + (f' (+{delta:,})' if delta else '')
        cells = [f'`{name}`', params, fmt_count(row['macs']), fmt_count(row['seed_flops'])]
        for d in devices:
            ls = latency[d].get(name)
            cells.append('-' if ls is None else
                         ' / '.join(_pct(ls[k]) if k in ls else '-' for k in ('infer_b1', 'infer_b64')))
        cells += [_top1(by_key.get((name, tag))) for tag, _ in DATASETS]
        cells += [_vs_plain(name, tag, by_key) for tag, _ in DATASETS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    sources = sorted({Path(r['_source']).name for r in reports})
    notes = [
        '',
        'params: 100 classes (+ what the attention adds to the plain backbone). MACs: multiply-accumulates of one '
        '3x32x32 image as `torch.utils.flop_counter.FlopCounterMode` counts them (its FLOPs / 2). FLOPs (seed conv.): '
        'the ZAM seed\'s thop 0.0.30 convention (`zamzoo.bench.flops.seed_flops`), the numbers of the seed\'s table, '
        'counted on the original code\'s structure: the seed\'s for the backbones and ZAM, the official code\'s for SE, '
        'ECA, CBAM and BAM (thop 0.0.30 on it). '
        'Latency / CPU time vs plain: median inference time against the plain backbone measured in the same run '
        '(batch 1 / batch 64; `-` = not measured; details in MODEL_CARD.md).' + ORT_NOTE * any(
            d[2] == 'onnxruntime' for d in devices) + COMPILE_NOTE * any(d[2] == 'compile' for d in devices)
        + ' top-1: mean ± std over seeds of the published weights.'
        ' top-1 vs plain: the model\'s final-epoch top-1 minus its plain backbone\'s, in points, mean over the seeds '
        'both published, with the 95% interval of a paired t-test by seed (`zamzoo.pairing`, the test of `zamzoo '
        'compare`); – = either is unpublished or they share fewer than two seeds.',
        '',
        f"Generated by `zamzoo bench tables` from {', '.join(f'`{s}`' for s in sources)} and the weights manifest.",
    ]
    return '\n'.join(lines + notes)


def overhead_section(reports: Sequence[Dict]) -> str:
    """Per latency report: device, command, date, and the times of every measured model."""
    parts = []
    for report in reports:
        s = report['settings']
        if not s.get('latency'):
            continue
        dev = report['device']
        measured = [row for row in report['results'] if row.get('latency')]
        settings = list(measured[0]['latency']) if measured else []
        parts += _headline(measured, dev, s.get('timer', 'wall'))
        parts += [
            f"**{dev['type'].upper()}**: {dev.get('name', '?')}{load_average_text(dev)}, "
            f"{report['created'][:10]}, torch {report['versions']['torch']}"
            + (f", zamzoo commit `{report['code_commit'][:12]}`" if report.get('code_commit') else '') + '.',
            '',
            f"Command: `{report.get('command', 'zamzoo bench models')}` (median of {s['repeats']} interleaved "
            f"rounds, float32, each model next to its plain backbone; "
            + ('CPU time of the process, not wall-clock latency' if s.get('timer') == 'process'
               else 'wall-clock latency') + ').',
            '',
            '| model | ' + ' | '.join(f'{k}: ms (plain ms) | {k} vs plain' for k in settings) + ' |',
            '|---|' + '---:|---:|' * len(settings),
        ]
        for row in measured:
            cells = [f"`{row['model']}`"]
            for k in settings:
                lat = row['latency'][k]
                cells += [f"{lat['ms']:.2f} ({lat['baseline_ms']:.2f})", _pct(lat)]
            parts.append('| ' + ' | '.join(cells) + ' |')
        parts.append('')
    if not parts:
        return 'No latency measured yet (`zamzoo bench models --device cpu|cuda`). Not measured on GPU.'
    if not any(r['device']['type'] == 'cuda' for r in reports if r['settings'].get('latency')):
        parts.append('GPU: not measured on GPU yet (`zamzoo bench models --device cuda` adds a training step).')
    return '\n'.join(parts).rstrip() + '\n'


HEADLINE = ('resnet18_zam', 'resnet18_plain')


def _setting_words(key: str) -> str:
    """'onnxruntime_infer_b1' -> 'inference at batch 1 in ONNX Runtime' (a report's latency key in words)."""
    runtime, _, setting = key.partition('_') if key.split('_')[0] in RUNTIME_LABELS else ('', '', key)
    words = setting.replace('infer_b', 'inference at batch ').replace('train_b', 'a training step at batch ')
    return words + (f' in {RUNTIME_LABELS[runtime][2:]}' if runtime else '')


def _headline(measured: Sequence[Dict], dev: Dict, timer: str) -> List[str]:
    """One sentence on the overhead of ZAM over its backbone (the issue's yardstick), when it was measured."""
    row = next((r for r in measured if (r['model'], r['baseline']) == HEADLINE), None)
    if row is None:
        return []
    lat = row['latency']
    said = [f"{_setting_words(k)}: {_pct(lat[k])} ({lat[k]['ms']:.2f} ms vs {lat[k]['baseline_ms']:.2f} ms)"
            for k in lat]
    how = 'latency' if timer == 'wall' else f"CPU time of the process, {dev.get('threads')} thread(s)"
    return [f"Overhead of `{HEADLINE[0]}` over `{HEADLINE[1]}` on {dev['type'].upper()} ({how}): "
            + '; '.join(said) + '.', '']


def _normalisation_lines(recipes) -> list:
    """The mean/std each recipe normalises each data set with, recipes with the same statistics on one line."""
    def numbers(values):
        return '(' + ', '.join(f'{v:.4g}' for v in values) + ')'

    groups = {}
    for r in recipes:
        by_stats = {}
        for dataset, (mean, std) in r.normalization.items():
            by_stats.setdefault(f'mean {numbers(mean)} std {numbers(std)}', []).append(dataset)
        text = '; '.join(f"{' and '.join(datasets)}: {stats}" for stats, datasets in by_stats.items())
        groups.setdefault(text, []).append(f'`{r.name}`')
    return (['Normalisation (`zamzoo.recipes.get_recipe(name).stats(dataset)`, the numbers the models\' pretrained '
             'cfgs announce):', '']
            + [f"- {', '.join(names)}: {text}" for text, names in groups.items()]
            + ['', 'An image folder or a Hugging Face data set is normalised with the mean/std of the weights the '
               'run starts from (`--init`, `--pretrained`) where they record theirs, else with the model\'s own (the '
               'run\'s config.json records them).'])


def recipes_table() -> str:
    """The training recipes (zamzoo.recipes) and the backbones that use each one."""
    from zamzoo.models import BACKBONES
    from zamzoo.recipes import get_recipe, list_recipes

    users = {}
    for b in BACKBONES.values():
        users.setdefault(b.recipe, []).append(b.name)
    lines = ['| recipe | backbones | epochs | batch | optimizer | lr schedule | weight decay | augmentation | '
             'loss extras |', '|---|---|---:|---:|---|---|---:|---|---|']
    for name in list_recipes():
        r = get_recipe(name)
        sched = (f"x{r.gamma:g} from epochs {', '.join(map(str, r.lr_change_epochs()))}"
                 if r.schedule == 'multistep' else r.schedule)
        if r.warmup_epochs:
            sched = f'linear warm-up {r.warmup_epochs} epoch (per step), then ' + sched
        aug = [f'RandomCrop(32, pad {r.crop_padding})'] if r.crop_padding else []
        aug += ['HorizontalFlip'] if r.hflip else []
        aug += [f'RandomRotation({r.rotation:g})'] if r.rotation else []
        extras = [text for value, text in ((r.nam_l1, f'{r.nam_l1:g} * L1 of the NAM BN scales (models with NAM)'),
                                           (r.spem_alpha, f'{r.spem_alpha:g} * SPEM penalty (models with SPEM)'),
                                           (r.label_smoothing, f'label smoothing {r.label_smoothing:g}')) if value]
        opt = f"SGD momentum {r.momentum:g}{', nesterov' if r.nesterov else ''}, lr {r.lr:g}"
        used_by = ', '.join(users.get(name, [])) or '(no default; chosen explicitly)'
        lines.append(f"| `{name}` v{r.version} | {used_by} | {r.epochs} | {r.batch_size} | {opt} | {sched} | "
                     f"{r.weight_decay:g} | {' + '.join(aug) or '-'} | {'; '.join(extras) or '-'} |")
    lines += ['', 'lr schedule: the epochs (counted from 1, as `metrics.jsonl` counts them) that first train at each '
              'new lr (`Recipe.lr_change_epochs`).', '', *_normalisation_lines([get_recipe(n) for n in list_recipes()]),
              '', 'Generated by `zamzoo bench tables` from `zamzoo/recipes.py`.']
    return '\n'.join(lines)


def _own_table():
    """The zoo's own rows (not modules registered at run time): backbones, attentions, their papers in that order."""
    from zamzoo.models import ATTENTIONS, BACKBONES

    attentions = [a for a in ATTENTIONS.values() if a.plugin is None]
    papers = dict.fromkeys(p for p in [a.paper for a in attentions] + [b.paper for b in BACKBONES.values()] if p)
    return list(BACKBONES.values()), attentions, list(papers)


def zoo_summary() -> str:
    """The model card's opening sentence: the zoo table's backbones and attentions, and how many models they make."""
    backbones, attentions, _ = _own_table()
    return (f'zamzoo registers {len(backbones) * len(attentions)} image classifiers with '
            f'[timm](https://github.com/huggingface/pytorch-image-models): {len(backbones)} CIFAR-sized backbones '
            f"({', '.join(f'`{b.name}`' for b in backbones)}) times {len(attentions)} attention settings "
            f"({', '.join(f'`{a.name}`' for a in attentions)}), named `<backbone>_<attention>`:")


def citations_bibtex() -> str:
    """BibTeX of every paper of the zoo table (MODEL_CARD.md)."""
    return '```bibtex\n' + '\n'.join(p.bibtex for p in _own_table()[2]) + '\n```'


def citations_list() -> str:
    """One line per paper of the zoo table (README.md)."""
    return '\n'.join(f'- {p.title}: {p.url}' for p in _own_table()[2])


def replace_block(text: str, block: str, content: str, path='the file') -> str:
    start, end = marker(block), marker(block, end=True)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise UsageError(f'{path} has no {start} ... {end} block to fill')
    return text[:i + len(start)] + '\n' + content.rstrip('\n') + '\n' + text[j:]


def render_files(reports: Sequence[Dict], records: Sequence[Dict], readme=DEFAULT_README,
                 model_card=DEFAULT_MODEL_CARD) -> Dict[Path, str]:
    """New text of each file whose blocks are generated (files that do not exist are skipped)."""
    table = models_table(reports, records)
    out = {}
    for path, blocks in ((readme, {'models-table': table, 'citations': citations_list()}),
                         (model_card, {'zoo': zoo_summary(), 'models-table': table,
                                       'overhead': overhead_section(reports), 'recipes': recipes_table(),
                                       'citations': citations_bibtex()})):
        if path is None:
            continue
        path = Path(path)
        if not path.exists():
            raise NotFoundError(f'{path} not found; expected the README.md and MODEL_CARD.md of a zamzoo checkout '
                                f'(run it there, or give --readme and --model-card)')
        text = path.read_text()
        for block, content in blocks.items():
            text = replace_block(text, block, content, path)
        out[path] = text
    return out


def update_tables(results: Sequence = (DEFAULT_RESULTS,), manifest=None, readme=DEFAULT_README,
                  model_card=DEFAULT_MODEL_CARD, check: bool = False) -> List[Path]:
    """Regenerate the blocks; returns the files whose text changed (with check=True, writes nothing)."""
    from ..pretrained import load_manifest

    changed = []
    for path, text in render_files(load_reports(results), load_manifest(manifest), readme, model_card).items():
        if path.read_text() != text:
            changed.append(path)
            if not check:
                write_text_atomic(path, text)
    return changed


def main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog='python -m zamzoo.bench.tables', description=__doc__.split('\n\n')[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


def add_arguments(p):
    p.add_argument('--results', nargs='+', default=[str(DEFAULT_RESULTS)], metavar='PATH',
                   help='bench JSON reports or folders of them (default: docs/bench)')
    p.add_argument('--manifest', default=None, help='weights manifest (default: the shipped one, or $ZAMZOO_MANIFEST)')
    p.add_argument('--readme', default=str(DEFAULT_README))
    p.add_argument('--model-card', default=str(DEFAULT_MODEL_CARD))
    p.add_argument('--check', action='store_true', help='write nothing; exit 1 if a table is out of date')


def run(args) -> int:
    changed = update_tables(args.results, args.manifest, args.readme, args.model_card, check=args.check)
    for path in changed:
        print(f"{path}: {'out of date' if args.check else 'updated'}")
    if not changed:
        print('tables up to date')
    return 1 if (args.check and changed) else 0


if __name__ == '__main__':
    raise SystemExit(main())
