"""pytest plugin (`-p timm_zoo_sample`): run timm's own tests on zoo models only, those named in ZAMZOO_TIMM_SAMPLE
(comma-separated). timm's test files parametrize over `timm.list_models(...)` when they are imported; this plugin,
loaded before them, registers the zoo and narrows those lists to the sample, and deselects the tests that name
timm's own models."""
import os

import timm

import zamzoo  # noqa: F401  registers the zoo with timm

SAMPLE = frozenset(os.environ['ZAMZOO_TIMM_SAMPLE'].split(','))


def _in_sample(name: str) -> bool:
    return name.split('.', 1)[0] in SAMPLE


ZOO_MODULES = sorted({timm.models.model_entrypoint(name).__module__.rsplit('.', 1)[-1] for name in SAMPLE})
"""The timm registry's module names of the sampled models ('cifar_resnet', ...)."""


def _sampled(list_fn):
    def listing(*args, **kwargs):
        if isinstance(kwargs.get('module'), (list, tuple)):
            # timm's FEAT_INTER_FILTERS: the modules whose models implement forward_intermediates; the zoo's do
            kwargs['module'] = list(kwargs['module']) + ZOO_MODULES
        return [name for name in list_fn(*args, **kwargs) if _in_sample(name)]
    return listing


timm.list_models = _sampled(timm.list_models)
timm.list_pretrained = _sampled(timm.list_pretrained)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        (keep if _in_sample(str(params.get('model_name', ''))) else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
