"""Training: the loop that makes the weights (`train`), evaluation (`evaluate`), schedules and checkpoints.

    from zamzoo.train import TrainConfig, train
    results = train(TrainConfig(model='resnet18_zam', data='data/', dataset='cifar100', recipe='zam'))
"""
from .checkpoint import checkpoint_state, load_checkpoint, load_weights, write_checkpoint
from .config import TrainConfig, default_recipe
from .evaluate import evaluate
from .build import create_model
from .loop import train
from .reporting import Reporter, TqdmReporter
from .run_files import CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, METRICS_FILE, RESULTS_FILE, WEIGHTS_FILE
from .run_folder import RunFolderBusy, lock_holder, lock_run_folder
from .schedule import RecipeLR, recipe_lr

__all__ = [
    'TrainConfig', 'train', 'evaluate', 'Reporter', 'TqdmReporter', 'RecipeLR', 'recipe_lr', 'create_model',
    'default_recipe',
    'checkpoint_state', 'write_checkpoint', 'load_checkpoint', 'load_weights',
    'CONFIG_FILE', 'CHECKPOINT_FILE', 'METRICS_FILE', 'CURVES_FILE', 'RESULTS_FILE', 'WEIGHTS_FILE',
    'RunFolderBusy', 'lock_holder', 'lock_run_folder',
]
