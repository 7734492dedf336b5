"""Loupe's engine: all the machine learning, usable from the CLI, notebooks, tests and the app.

Never imports streamlit (tests/test_structure.py checks it): pages call into this package, not the
reverse. The names a notebook user reaches for first are re-exported here, lazily (timm style):

    import engine
    ds = engine.open_dataset("builtin:fashion-mnist")
    run = engine.find_run("my-run")
    report = engine.evaluate_run(run)

Lazily, because `python -m engine --help`, `engine.train.jobs` and the pages import this package and
must not pay for torch: each name imports its defining module on first use. The stages themselves are
subpackages (`engine.data`, `engine.models`, `engine.train`, `engine.runs`, `engine.metrics`,
`engine.evaluate`, `engine.explain`, `engine.predict`, `engine.cli`); ARCHITECTURE.md maps them.
The attribution function is `engine.explain.explain`: a top-level `engine.explain` is the subpackage,
and a function of the same name could not live beside it.
"""

from engine.lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "data.dataset": ["dataset_stats", "open_dataset", "quick_stats"],
        "config": ["RunConfig"],
        "runs.folder": ["Run", "find_run", "list_runs"],
        "models.factory": ["build_model"],
        "train.run": ["run_training"],
        "evaluate.report": ["evaluate_run"],
        "predict.predictor": ["Predictor"],
    },
)
