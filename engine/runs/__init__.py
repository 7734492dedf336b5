"""The run folder (contract 2 in ARCHITECTURE.md): every file in it has one owner here.

`folder` (status, config, metrics, summary, listing, atomic writes), `checkpoint` (safetensors weights
and the resumable training state, both checksummed) and `sweeps` (saved robustness sweeps).
"""

from engine.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "folder": [
            "Run",
            "RunError",
            "StorageError",
            "STATES",
            "atomic_write_bytes",
            "atomic_write_json",
            "delete_run",
            "find_run",
            "list_runs",
            "new_run_id",
            "now_iso",
            "pid_alive",
            "run_row",
            "runs_dir",
            "stale_after_s",
            "storage_error",
            "write_npz",
        ],
        "checkpoint": ["CheckpointError", "load_state", "load_weights", "read_weights", "save_state", "save_weights"],
        "sweeps": [
            "is_stale",
            "latest_record",
            "latest_sweep",
            "load_record",
            "load_sweep",
            "outdated",
            "save_sweep",
            "sweep_params",
        ],
    },
)
