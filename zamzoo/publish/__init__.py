"""Publishing weights: export a training run to a Hub-ready folder, push it, verify it.

    from zamzoo.publish import export_run, push_folder, verify_published
    export_run(['runs/r18zam-s0', 'runs/r18zam-s1'], 'hub/staging/resnet18_zam.cifar100')
    push_folder('hub/staging/resnet18_zam.cifar100')   # HfApi upload, then a record in the manifest
    verify_published('resnet18_zam')                   # sha256 of the downloaded/cached file vs the manifest

Submodules: export (folder writer), card (model card), push (validation + upload), verify (verify, list),
hubcache (an export laid out in a local Hugging Face cache, for loading it offline as if downloaded). The manifest
and the pretrained guard live below the models, in zamzoo.pretrained; papers and BibTeX in the zoo table.
"""
from .card import render_model_card
from .export import ExportError, ExportResult, export_run
from .hubcache import cache_export, offline_hub
from .push import InvalidExportError, push_folder, validate_export
from .verify import model_status, verify_published

__all__ = [
    'ExportError', 'ExportResult', 'InvalidExportError', 'cache_export', 'export_run', 'model_status',
    'offline_hub', 'push_folder', 'render_model_card', 'validate_export', 'verify_published',
]
