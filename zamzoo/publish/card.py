"""The model card (README.md) of an exported Hub repo, in timm's style.

timm's `generate_readme` writes the YAML header (tags, pipeline_tag, library_name, license), the title, the
description, "Model Details" and "Model Usage"; we add what it has no field for: `datasets` with Hugging Face
dataset ids and `model-index` metrics in the header (metrics only when the export has results), and the
"Results", "Training" and "Citation" sections (and "ONNX" when the export has a model.onnx). The usage texts are
the templates `templates/usage.md` and `onnx.md`, package data of zamzoo.publish (read through
importlib.resources, so a wheel finds them as a checkout does).
"""
import importlib.resources
import math
import string
from typing import Optional, Tuple

from ..dataset_table import DATASETS
from ..models import TAGS, ZOO
from .onnx import ONNX_FILENAME


def _template(name: str) -> string.Template:
    return string.Template((importlib.resources.files(__package__) / 'templates' / name).read_text())


def unverified_cifar(tag: str, training_data: Optional[dict]) -> bool:
    """Whether weights under a CIFAR tag are not shown to be trained on the official release: trained on other data
    in CIFAR's format (`official` False), or a bare checkpoint, whose data is the exporter's word (`official` None).
    `training_data`: results.json's (None: an export from before that record)."""
    return tag in TAGS and training_data is not None and training_data.get('official') is not True


def dataset_names(tag: str, training_data: Optional[dict] = None) -> Tuple[str, Optional[str]]:
    """(display name, Hugging Face dataset id) of what weights of a pretrained tag were trained on; a tag zamzoo
    does not know names itself. `training_data` (results.json's): weights under a CIFAR tag not shown to be trained
    on the official release (`unverified_cifar`) are named as what is known of their data, with no Hub dataset id."""
    d = DATASETS.get(tag)
    name, hf_id = (d.display_name or tag, d.hf_id) if d else (tag, None)
    if not unverified_cifar(tag, training_data):
        return name, hf_id
    if training_data.get('official') is None:
        return f"{name} by the exporter's word (a bare checkpoint: no run recorded its training data)", None
    counts = [f'{n:,}' if isinstance(n, int) else 'unknown' for n in
              (training_data.get('train_images'), training_data.get('test_images'))]
    return f'{name}-format data (not the official release: {counts[0]} train / {counts[1]} test images)', None


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _pm(stat: Optional[dict]) -> str:
    if not stat or stat.get('mean') is None:
        return '-'
    if stat.get('std') is None:
        return f"{stat['mean']:.2f}"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _yaml_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _front_matter_extra(info: dict) -> str:
    """`datasets:` and, when there are results, `model-index:` lines for the YAML header."""
    name, hf_id = dataset_names(info['tag'], info.get('training_data'))
    lines = []
    if hf_id:
        lines += ['datasets:', f'- {hf_id}']
    results = info.get('results') or {}
    metrics = [(key, label) for key, label in (('top1', 'Top-1 accuracy'), ('top5', 'Top-5 accuracy'))
               if (results.get(key) or {}).get('mean') is not None and key in _reported(info)]
    if metrics:
        lines += [
            'model-index:',
            f"- name: {_yaml_str(info['model_name'])}",
            '  results:',
            '  - task:',
            '      type: image-classification',
            '      name: Image Classification',
            '    dataset:',
            f'      name: {_yaml_str(name)}',
            f"      type: {_yaml_str(hf_id or _own_dataset_type(info))}",
            f"      split: {'test' if info['tag'] in TAGS else 'validation'}",
            '    metrics:',
        ]
        n, left_out = len(results.get('seeds') or []), len(results.get('seeds_left_out') or [])
        more = f'; {left_out} more planned, left out' if left_out else ''
        for key, label in metrics:
            lines += [
                '    - type: accuracy',
                f'      value: {round(float(results[key]["mean"]), 2)}',
                f"      name: {_yaml_str(f'{label} (mean of {n} seed(s), final epoch{more})')}",
            ]
    return '\n'.join(lines) + ('\n' if lines else '')


def _own_dataset_type(info: dict) -> str:
    """model-index's dataset type of data with no Hub id: the tag, marked when the tag is a CIFAR one whose data was
    not the official release (the Hub reads a bare 'cifar100' as the CIFAR-100 data set)."""
    return f"{info['tag']}-format" if info['tag'] in TAGS else info['tag']


def _results_section(info: dict) -> str:
    results = info.get('results') or {}
    runs = results.get('runs') or []
    if not any(r.get('top1') is not None for r in runs):
        return ('## Results\n'
                'No evaluation results come with this checkpoint (it was exported without a results file), '
                'so no accuracy is claimed for it.\n')
    ds = dataset_names(info['tag'], info.get('training_data'))[0]
    keys = _reported(info) + ('best_top1',)
    names = {'top1': 'top-1', 'top5': 'top-5', 'best_top1': 'best top-1'}
    text = [f"## Results\n{ds} {'test set' if info['tag'] in TAGS else 'validation images'}, "
            f"{' / '.join(names[k] for k in keys[:-1])} accuracy (%) of the final epoch of each training run, "
            f"and the best top-1 over the epochs. The weights in this repo are those of seed {results['weights_seed']}.\n",
            '| seed | ' + ' | '.join(names[k] for k in keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for r in runs:
        mark = ' (weights)' if r.get('seed') == results.get('weights_seed') else ''
        text.append(f"| {r.get('seed')}{mark} | " + ' | '.join(_fmt(r.get(k)) for k in keys) + ' |')
    text.append(f'| mean ± std ({len(runs)} run(s)) | ' + ' | '.join(_pm(results.get(k)) for k in keys) + ' |')
    left_out = results.get('seeds_left_out') or []
    if left_out:  # a seed that failed (diverged) or has not finished: the figures above are of the others only
        text.append('\nLeft out of these figures, though the sweep planned them: '
                    + ', '.join(f"seed {r['seed']} ({r['state']})" for r in left_out) + '.')
    return '\n'.join(text) + '\n'


def _reported(info: dict) -> tuple:
    """The accuracies a card reports: top-5 only with more than 5 classes (with fewer it is 100% by definition)."""
    return ('top1', 'top5') if info['num_classes'] > 5 else ('top1',)


def _onnx_section(info: dict) -> str:
    """How to run model.onnx with ONNX Runtime: input name and the checkpoint's normalisation."""
    record, (_, h, w) = info['onnx'], info['input_size']
    on_hub = _weights_names(info)[2] != 'PATH'  # weights that load from their folder only: its model.onnx too
    return _template('onnx.md').substitute(
        where='repository' if on_hub else 'folder (PATH)',
        hub_import='from huggingface_hub import hf_hub_download\n' if on_hub else '',
        onnx_file=f"hf_hub_download('{info['repo_id']}', '{ONNX_FILENAME}')" if on_hub else f"'PATH/{ONNX_FILENAME}'",
        opset=record['opset'], batches=' and '.join(map(str, record['checked_batch_sizes'])),
        max_rel_err=f"{record['max_rel_err']:.1e}", input_name=record['input_name'],
        output_name=record['output_name'], height=h, width=w, num_classes=info['num_classes'],
        mean=list(info['mean']), std=list(info['std']),
        short_side=math.floor(h / info['crop_pct']), resample=info['interpolation'].upper())


def _registration(info: dict) -> dict:
    """The usage snippets' line that registers the architecture with timm (`import zamzoo`, or for a module
    registered at run time its `register_before_create_model` line), and what to say where it was left out."""
    record, model = info.get('attention_module'), info['model']
    if record:
        return dict(register=f"{record['register_before_create_model']}  # registers {model}, its module too",
                    register_words='that line',
                    register_fix="run it first (the module's source must be where it names, see Attention module)")
    return dict(register=f'import zamzoo  # registers the architecture {model} with timm',
                register_words='`import zamzoo`',
                register_fix='install zamzoo (`pip install zamzoo`) and import it first')


def _attention_module_section(record: dict) -> str:
    """What a model of a module registered at run time needs before `timm.create_model`: the module's code."""
    return ('## Attention module\n'
            f"This model's attention module `{record['name']}` is not part of zamzoo: it was imported from "
            f"`{record['spec']}` (source sha256 `{record['sha256']}`). Its code is needed to build the model: "
            f"register it before `timm.create_model`:\n\n```python\n{record['register_before_create_model']}\n```\n"
            '(or install the package that declares it in the entry-point group `zamzoo.attention`). '
            '`zamzoo push` refuses this folder: others could not build the model from the Hub.\n')


def _training_section(info: dict) -> str:
    hp = info.get('hparams_summary') or {}
    lines = ['## Training']
    if hp:
        lines.append('Hyper-parameters of the run whose weights are published (all runs: `hparams.json`):\n')
        lines += [f'- **{k}:** {v}' for k, v in hp.items()]
    else:
        lines.append('Exported from a bare checkpoint: the training hyper-parameters are not known.')
    lines.append('\nFiles: `model.safetensors` (weights), `config.json` (timm config), `hparams.json` '
                 '(training configuration of every run), `train_log.json` (per-epoch metrics of every run), '
                 '`results.json` (final results and provenance), '
                 + (f'`{ONNX_FILENAME}` (the model for ONNX Runtime, below), ' if info.get('onnx') else '')
                 + '`SHA256SUMS` (the sha256 of every file as exported: `sha256sum -c SHA256SUMS`).')
    return '\n'.join(lines) + '\n'


def _weights_names(info: dict) -> Tuple[str, str, str]:
    """(the name `timm.create_model(..., pretrained=True)` and `zamzoo train --init` load this card's weights by,
    a sentence on where else they load from, the name transformers loads them by). zamzoo's CIFAR weights go by
    their registered name 'model.tag' (the manifest pins its repo); any other export by its repo, 'hf-hub:org/name':
    timm knows no 'model.tag' for it; weights under a CIFAR tag trained on other data than the official release by
    their folder only (push refuses them the tag's repo)."""
    hub, repo = f"hf-hub:{info['repo_id']}", info['repo_id']
    unofficial = unverified_cifar(info['tag'], info.get('training_data'))
    if info.get('attention_module'):
        return 'local-dir:PATH', (
            "PATH: this folder. These weights load from it only: `zamzoo push` does not publish a model whose "
            "attention module was registered at run time (see Attention module)."), 'PATH'
    if info['tag'] in TAGS and not unofficial:
        return info['model_name'], (
            f"The same weights load straight from this repository's config: `timm.create_model('{hub}', "
            f"pretrained=True)` (after `import zamzoo`, which registers the architecture `{info['model']}`)."), repo
    if info['tag'] in TAGS:
        return 'local-dir:PATH', (
            f"PATH: this folder. These weights load from it only: `{info['model_name']}` and its repository hold "
            f"zamzoo's weights trained on the official release, and `zamzoo push` does not publish these there."), \
            'PATH'
    return hub, (
        f"Before this folder is pushed, the same calls load it from disk: `timm.create_model('local-dir:PATH', "
        f"pretrained=True)` (PATH: this folder). `{info['model_name']}` does not load these weights: zamzoo "
        f"registers pretrained tags ({', '.join(TAGS)}) for its own weights trained on the official CIFAR releases "
        f"only."), repo


def render_model_card(info: dict) -> str:
    """README.md text. `info` keys: model, tag, model_name ('model.tag'), repo_id, params, macs, input_size,
    num_classes, num_features, mean, std, crop_pct, interpolation (timm's evaluation transform), recipe, results (aggregate from export, or None), hparams_summary,
    code_commit, zamzoo_version, init (the run's --init record, or None), onnx (results.json's record of
    model.onnx, or None), attention_module (results.json's record of a module registered at run time, or None)."""
    from timm.models._hub import generate_readme  # not re-exported by timm.models

    model, tag = info['model'], info['tag']
    entry = ZOO[model]
    ds_name = dataset_names(tag, info.get('training_data'))[0]
    _, h, w = info['input_size']
    details = {
        'Model Type': 'Image classification / feature backbone',
        'Model Stats': {
            'Params': f"{info['params']:,} ({info['params'] / 1e6:.2f} M)",
            'MACs': f"{info['macs']:,} ({info['macs'] / 1e6:.2f} M, one {h}x{w} image, torch FlopCounterMode / 2)",
            'Image size': f'{h} x {w}',
        },
        'Architecture': entry.description,
        'Papers': [f'{p.title}: {p.url}' for p in entry.papers],
        # not 'Dataset': generate_readme would turn it into a `datasets:` entry 'cifar-100', not a Hub dataset id
        'Training dataset': ds_name,
        'Training recipe': info.get('recipe') or 'unknown (bare checkpoint)',
        'Preprocessing': f"mean {tuple(info['mean'])}, std {tuple(info['std'])}",
    }
    if info.get('code_commit'):
        details['Code commit'] = info['code_commit']
    details['zamzoo version'] = info['zamzoo_version']
    if info.get('init'):
        details['Initial weights'] = f"{info['init']['source']} (sha256 {info['init'].get('sha256') or 'unknown'})"
    create_name, other_sources, hf_name = _weights_names(info)
    usage = _template('usage.md').substitute(
        model=model, create_name=create_name, other_sources=other_sources, height=h, width=w,
        num_classes=info['num_classes'], top_k=min(5, info['num_classes']), num_features=info['num_features'],
        repo_id=hf_name, **_registration(info))
    description = f"{entry.description}, trained on {ds_name} with zamzoo. " + (
        "The architecture is registered with timm by the zamzoo package and this model's attention module "
        "(see Attention module): run its line before `timm.create_model`." if info.get('attention_module') else
        "The architecture is registered with timm by the zamzoo package: install it and `import zamzoo` before "
        "`timm.create_model`.")
    card = dict(
        tags=['image-classification', 'timm', 'zamzoo', 'attention', entry.attention.name],
        license=info['license'],
        description=description,
        details=details,
        usage=usage,
    )
    text = generate_readme(card, info['model_name'])
    # splice datasets / model-index into the YAML header (between the two '---' lines)
    head, sep, body = text.partition('---\n# Model card')
    if not sep:
        raise RuntimeError('timm.generate_readme returned an unexpected layout')
    text = head + _front_matter_extra(info) + sep + body
    if info.get('attention_module'):
        text += '\n' + _attention_module_section(info['attention_module'])
    text += '\n' + _results_section(info) + '\n' + _training_section(info)
    if info.get('onnx'):
        text += '\n' + _onnx_section(info)
    text += '\n## Citation\n' + ''.join(f'```bibtex\n{p.bibtex}\n```\n' for p in entry.papers)
    return text
