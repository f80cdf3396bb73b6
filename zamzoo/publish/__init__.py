"""Publishing weights: export a training run to a Hub-ready folder, push it, verify it, guard pretrained=True.

    from zamzoo.publish import export_run, push_folder, verify_published
    export_run(['runs/r18zam-s0', 'runs/r18zam-s1'], 'hub/staging/resnet18_zam.cifar100')
    push_folder('hub/staging/resnet18_zam.cifar100')   # HfApi upload, then a record in weights/manifest.json
    verify_published('resnet18_zam')                   # sha256 of the downloaded/cached file vs the manifest

Submodules: export (folder writer), card (model card), push (validation + upload), verify (verify, list),
guard (the pretrained guard used by the model factory), hubcache (an export laid out in a local Hugging Face
cache, for loading it offline as if downloaded).
Names are imported lazily so that the model factory can import the guard without the rest.
"""
import importlib

_LAZY = {
    'export_run': 'export', 'ExportError': 'export', 'ExportResult': 'export', 'sha256_file': 'export',
    'render_model_card': 'card',
    'push_folder': 'push', 'validate_export': 'push', 'InvalidExportError': 'push',
    'verify_published': 'verify', 'model_status': 'verify',
    'prepare_pretrained': 'guard', 'weights_errors': 'guard',
    'cache_export': 'hubcache', 'offline_hub': 'hubcache',
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
