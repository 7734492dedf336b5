"""Training: a config and a dataset in, a run folder out.

`run` dispatches (plain, k-fold, linear probe); `setup` prepares data, model and device; `fit` is the
epoch loop with validation, checkpoints and early stopping; `loop` the steps; `kfold`, `probe` and
`lr_find` the other modes; `optim`, `augment`, `imbalance` and `recipes` the recipe's parts;
`distributed` and `jobs` how it runs (DDP, background processes and the device queue).
"""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "run": ["run_training"],
    "fit": ["fit"],
    "setup": ["TrainingSetup", "dataset_for", "image_size_for", "prepare", "write_header"],
    "loop": ["DeviceData", "TrainingFailed", "predict_probs", "train_one_epoch"],
    "kfold": ["fit_kfold"],
    "probe": ["fit_probe"],
    "records": ["monitor_name", "training_summary", "validation_record"],
    "lr_find": ["find_lr"],
})
