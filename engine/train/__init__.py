"""Training: a config and a dataset in, a run folder out.

Read in this order: `run.run_training` picks the mode (plain, k-fold, linear probe) and records
failures; `setup` maps the config to its dataset and prepares data, model and device (`prepare`), and
writes the run header (`write_header`); `fit` is the plain run's `Trainer` (epochs, validation,
checkpoints, early stopping, resume via `TrainerState`); `loop` the steps; `records` the validation
record and summary every mode writes; `kfold`, `probe` and `lr_find` the other modes; `optim`,
`augment`, `imbalance` and `recipes` the recipe's parts; `distributed` and `jobs` how it runs (DDP,
background processes and the device queue). Imports go one way, down this list: `run` -> `kfold` ->
`fit`/`probe` -> `records` -> `setup`.
"""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "run": ["run_training"],
        "fit": ["Trainer", "TrainerState"],
        "setup": ["TrainingSetup", "dataset_for", "image_size_for", "prepare", "write_header"],
        "loop": ["DeviceData", "TrainingFailed", "predict_probs", "train_one_epoch"],
        "kfold": ["fit_kfold"],
        "probe": ["fit_probe"],
        "records": ["monitor_name", "training_summary", "validation_record"],
        "lr_find": ["find_lr"],
    },
)
