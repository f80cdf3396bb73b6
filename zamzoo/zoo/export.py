"""`zoo export`: every (model, dataset) group of a sweep with enough finished seeds becomes one Hub-ready folder
(`zamzoo.publish.export_run` over its runs: mean +- std over the seeds), optionally pushed (which records the
manifest); then the README and MODEL_CARD tables are regenerated (`zamzoo.bench.tables.update_tables`)."""
from pathlib import Path

from ..bench.tables import DEFAULT_MODEL_CARD, DEFAULT_README, DEFAULT_RESULTS, update_tables
from ..errors import UsageError, ZamzooError
from ..publish.export import DEFAULT_STAGING, export_run
from .state import read_json, sweep_status


def sweep_groups(out) -> dict:
    """(model, dataset) -> the sweep's runs of it (status rows), in seed order."""
    groups = {}
    for run in sorted(sweep_status(out)['runs'], key=lambda r: r['seed']):
        groups.setdefault((run['model'], run['dataset']), []).append(run)
    return groups


def export_sweep(out, *, min_seeds: int = 3, staging=DEFAULT_STAGING, push: bool = False, manifest=None,
                 readme=DEFAULT_README, model_card=DEFAULT_MODEL_CARD, bench_results=(DEFAULT_RESULTS,)) -> dict:
    """Export (and push) each group with at least `min_seeds` done runs; {'exported', 'too_few', 'errors',
    'tables'}: the groups exported (folder, seeds, top-1 mean/std, pushed record), those listed only, those whose
    export or push raised (the others go on), and the table files that changed."""
    if min_seeds < 1:
        raise UsageError(f'min_seeds: expected a positive integer, got {min_seeds}')
    exported, too_few, errors = [], [], []
    for (model, dataset), runs in sweep_groups(out).items():
        done = [r for r in runs if r['state'] == 'done']
        group = {'model': model, 'dataset': dataset, 'seeds': [r['seed'] for r in done], 'runs': len(runs)}
        if len(done) < min_seeds:
            too_few.append(group)
            continue
        try:
            result = export_run([r['folder'] for r in done], Path(staging) / f'{model}.{dataset}', overwrite=True)
            group['folder'] = str(result.path)
            group['top1'] = read_json(result.path / 'results.json', {}).get('top1')  # mean, std, n
            if push:
                from ..publish.push import push_folder
                group['pushed'] = push_folder(result.path, manifest=manifest)
        except ZamzooError as e:
            errors.append({**group, 'error': str(e)})
            continue
        exported.append(group)
    tables = update_tables(bench_results, manifest=manifest, readme=readme, model_card=model_card)
    return {'exported': exported, 'too_few': too_few, 'errors': errors, 'tables': [str(p) for p in tables]}
