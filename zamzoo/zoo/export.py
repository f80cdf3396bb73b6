"""`zoo export`: every (model, dataset) group of a sweep with enough finished seeds becomes one Hub-ready folder
(`zamzoo.publish.export_run` over its runs: mean +- std over the seeds), optionally pushed (which records the
manifest); then the README and MODEL_CARD tables are regenerated (`zamzoo.bench.tables.update_tables`).

Every destination (staging folder, manifest, table files) is checked before the first write. The tables are
regenerated in the files given, or by default in the checkout's README.md / MODEL_CARD.md from its docs/bench
reports when they exist (a wheel install has none: the tables are skipped, and the result says so)."""
import contextlib
from pathlib import Path
from typing import Optional

from .._paths import check_writable
from ..errors import NotFoundError, UsageError, ZamzooError
from ..publish.export import DEFAULT_STAGING, RESULTS_FILE, ExportError, default_export_folder, export_run
from .state import sweep_status


def sweep_groups(out) -> dict:
    """(model, dataset) -> the sweep's runs of it (status rows), in seed order."""
    groups = {}
    for run in sorted(sweep_status(out)['runs'], key=lambda r: r['seed']):
        groups.setdefault((run['model'], run['dataset']), []).append(run)
    return groups


def table_destinations(readme, model_card, bench_results) -> Optional[dict]:
    """The table files to regenerate, checked now: the paths given (each must exist and be writable), or by default
    the checkout's files (installed: the current folder's, `bench.tables.DEFAULT_README`...) when they all exist;
    None when the defaults are missing (skipped)."""
    from ..bench.tables import DEFAULT_MODEL_CARD, DEFAULT_README, DEFAULT_RESULTS

    given = readme is not None or model_card is not None or bench_results is not None
    paths = {'readme': Path(readme or DEFAULT_README), 'model_card': Path(model_card or DEFAULT_MODEL_CARD),
             'results': [Path(p) for p in (bench_results or (DEFAULT_RESULTS,))]}
    missing = [p for p in (paths['readme'], paths['model_card'], *paths['results']) if not p.exists()]
    if missing and not given:
        return None
    if missing:
        raise NotFoundError(f'{", ".join(map(str, missing))} not found (the tables are regenerated in the README and '
                            f'model card given, from the bench reports given); nothing was exported')
    for name in ('readme', 'model_card'):
        check_writable(paths[name], f'--{name.replace("_", "-")}', folder=False)
    return paths


def check_destinations(staging, push: bool, manifest, datasets) -> None:
    """Every place export_sweep writes, checked before the first write: the manifest only when a push of one of
    `datasets` records into it (`records_tag`: a CIFAR data set's tag is its name; one's own data records none)."""
    from ..pretrained.manifest import check_recordable, record_path, records_tag

    check_writable(staging, '--staging')
    if push and any(map(records_tag, datasets)):
        check_recordable(record_path(manifest))


def export_sweep(out, *, min_seeds: int = 3, staging=DEFAULT_STAGING, push: bool = False, manifest=None,
                 readme=None, model_card=None, bench_results=None) -> dict:
    """Export (and push) each group with at least `min_seeds` done runs (each group's `left_out`: the seeds of its
    other runs and their state, which the export's results.json and card name too); {'exported', 'too_few',
    'errors', 'tables', 'tables_skipped', 'tables_error'}: the groups exported (folder, seeds, top-1 mean/std, the
    pushed record or 'push_error'), those listed only, those whose export raised (the others go on), the table files
    that changed, why the tables were not regenerated, and why their update failed (None when it did not). An
    exported group's 'tag' is its export's (an image folder's name; 'dataset' is the data set's kind). A group not
    exported now whose staging folder holds an export of before has it as 'earlier_export' (folder, seeds)."""
    if min_seeds < 1:
        raise UsageError(f'min_seeds: expected a positive integer, got {min_seeds}')
    tables = table_destinations(readme, model_card, bench_results)
    groups = sweep_groups(out)
    check_destinations(staging, push, manifest, [dataset for _, dataset in groups])
    exported, too_few, errors = [], [], []
    shared = _shared_destinations(groups, min_seeds, staging)
    for (model, dataset), runs in groups.items():
        done = [r['folder'] for r in runs if r['state'] == 'done']
        group = {'model': model, 'dataset': dataset, 'seeds': [r['seed'] for r in runs if r['state'] == 'done'],
                 'runs': len(runs),
                 'left_out': [{'seed': r['seed'], 'state': r['state']} for r in runs if r['state'] != 'done']}
        try:
            if len(done) < min_seeds:
                too_few.append(_not_exported(group, runs, staging))
                continue
            if (model, dataset) in shared:
                raise ExportError(shared[model, dataset])
            group.update(_export_group(done, staging, group['left_out']))
        except ZamzooError as e:
            errors.append(_not_exported(group, runs, staging, error=str(e)))
            continue
        exported.append(dict(group, **(_push_group(group['folder'], manifest) if push else {})))
    result = {'exported': exported, 'too_few': too_few, 'errors': errors, 'tables': [], 'tables_error': None,
              'tables_skipped': None if tables else 'no README.md, MODEL_CARD.md and docs/bench here (not a '
                                                    'checkout); give --readme, --model-card and --bench-results'}
    if tables:
        result.update(_update_tables(tables, manifest))
    return result


def _not_exported(group: dict, runs: list, staging, **why) -> dict:
    """A group not exported now, with the tag its export has (an image folder's name; 'folder' is its kind) and
    'earlier_export': {'folder', 'seeds'} of the export its staging folder holds from an earlier `zoo export` (its
    seeds then: a run of them may have failed since), None where it holds none; None for both where no run's
    config.json gives the folder."""
    from .._io import read_json_object
    folder = next((f for f in (_export_folder(run, staging) for run in runs) if f is not None), None)
    earlier = None
    if folder is not None and (folder / RESULTS_FILE).is_file():
        with contextlib.suppress(ZamzooError):
            seeds = read_json_object(folder / RESULTS_FILE, ZamzooError).get('seeds')
            earlier = {'folder': str(folder), 'seeds': seeds}
    return dict(group, tag=folder.name.split('.', 1)[1] if folder is not None else None, earlier_export=earlier, **why)


def _export_folder(run: dict, staging) -> Optional[Path]:
    """Where the run's group is exported (`default_export_folder`), None where it has no config.json (not started)
    or the config does not say."""
    from ..train.run_files import CONFIG_FILE
    if not (Path(run['folder']) / CONFIG_FILE).is_file():
        return None
    try:
        return default_export_folder([run['folder']], staging)
    except ZamzooError:
        return None


def _shared_destinations(groups: dict, min_seeds: int, staging) -> dict:
    """(model, dataset) -> why not exported, for the groups to export whose exports would go to one folder (an image
    folder and a Hugging Face data set of one name, swept for one model): each would replace the other's."""
    by_folder = {}
    for key, runs in groups.items():
        done = [r['folder'] for r in runs if r['state'] == 'done']
        if len(done) >= min_seeds:
            try:
                by_folder.setdefault(default_export_folder(done, staging), []).append(key)
            except ZamzooError:
                continue  # its export raises the same error, reported with the group
    return {key: f"{' and '.join(f'{m} on {d}' for m, d in keys)} would all be exported to {folder}, each replacing "
                 f"the other: export each with `zamzoo export RUN... --out FOLDER`"
            for folder, keys in by_folder.items() if len(keys) > 1 for key in keys}


def _export_group(folders: list, staging, left_out: list) -> dict:
    """Export the runs into staging/<model>.<tag> (the tag the export gives them: a run on an image folder is
    published under its folder's name, not 'folder')."""
    from .._io import read_json_object

    export = export_run(folders, staging=staging, overwrite=True, seeds_left_out=left_out)
    return {'folder': str(export.path), 'tag': export.tag,
            'top1': read_json_object(export.path / RESULTS_FILE, ZamzooError).get('top1')}


def _push_group(folder: str, manifest) -> dict:
    """{'pushed': the manifest record} of a pushed export, or {'push_error': why not} (the export stays done)."""
    from ..publish.push import push_folder
    try:
        return {'pushed': push_folder(folder, manifest=manifest)[0]}
    except ZamzooError as e:
        return {'push_error': str(e)}


def _update_tables(tables: dict, manifest) -> dict:
    """export_sweep's 'tables' (the files that changed), or 'tables_skipped' when the manifest was never created (no
    push recorded into it: it has no weights to list), or 'tables_error' (the exports are done: reported with them,
    not lost behind this error)."""
    from ..bench.tables import update_tables
    from ..pretrained.manifest import manifest_path

    path = Path(manifest).expanduser() if manifest is not None else manifest_path()
    if not path.exists():
        return {'tables_skipped': f'no manifest at {path} (nothing is recorded in it yet): no weights to list'}
    try:
        changed = update_tables(tables['results'], manifest=None if manifest is None else path,
                                readme=tables['readme'], model_card=tables['model_card'])
    except ZamzooError as e:
        return {'tables_error': str(e)}
    return {'tables': [str(p) for p in changed]}
