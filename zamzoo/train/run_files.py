"""The names of the files a training run writes in its run folder, in one place (the folder is written, read back
and locked by `zamzoo.train.run_folder`; this module imports nothing, so every layer of zamzoo.train can use it).

    <out>/config.json       the run's settings and the full recipe, as used                      CONFIG_FILE
    <out>/metrics.jsonl     one line per epoch (its fields: zamzoo.train.loop's epoch record)    METRICS_FILE
    <out>/curves.png        loss, accuracy and lr per epoch                                      CURVES_FILE
    <out>/checkpoint.pt     the whole training state after each epoch (weights_only-loadable)    CHECKPOINT_FILE
    <out>/model.safetensors the final weights, written when the run completes                   WEIGHTS_FILE
    <out>/results.json      a completed run's final and best top-1/top-5, images/s, provenance   RESULTS_FILE
    <out>/split.json        --holdout's train/validation images (reused by --resume and eval)    SPLIT_FILE
    <out>/.lock             held by the one process writing the folder                           LOCK_FILE
    <out>/failed.json       why the last attempt failed (train, or the zoo's executors)          FAILED_FILE
"""
CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
CURVES_FILE = 'curves.png'
CHECKPOINT_FILE = 'checkpoint.pt'
WEIGHTS_FILE = 'model.safetensors'
RESULTS_FILE = 'results.json'
SPLIT_FILE = 'split.json'
LOCK_FILE = '.lock'
FAILED_FILE = 'failed.json'
# results.json's record of the model.safetensors the run wrote: its size (checked by run_status) and sha256 (checked
# wherever the weights are read: zamzoo.train.checkpoint.load_weights)
WEIGHTS_SIZE_KEY = 'weights_size_bytes'
WEIGHTS_SHA256_KEY = 'weights_sha256'
