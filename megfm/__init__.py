"""megfm: self-supervised foundation models of MEG.

The public API is re-exported here and imported lazily (:func:`lazy_loader.attach`, as MNE
does), so ``import megfm`` is fast and data-only work never loads torch. See ``docs/`` for
the guides.
"""

import lazy_loader as _lazy

from ._version import __version__

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["cli", "data", "embedding", "evaluate", "explain", "masking", "models",
                "pipeline", "simulate", "tokenize", "training"],
    submod_attrs={
        # data layer
        "data.read": ["read_raw"],
        "data.geometry": ["SensorGeometry"],
        "data.preprocess": ["PreprocessConfig", "preprocess"],
        "data.epochs": ["make_windows"],
        "data.windows": ["Windows"],
        "data.from_mne": ["windows_from_mne"],
        "data.store": ["open_store", "read_store", "write_store"],
        "data.dataset": ["WindowDataset"],
        "data.batch": ["Batch", "collate_windows"],
        "data.prepare": ["prepare"],
        # simulator
        "simulate": ["sensor_array", "simulate_cohort"],
        # model
        "models": ["MaskedSignalModel", "ModelConfig", "load_pretrained"],
        # training
        "training": ["MEGDataModule", "PretrainConfig", "pretrain"],
        # downstream
        "embedding": ["Embedder", "embed"],
        "evaluate": ["evaluate_reconstruction", "finetune", "raw_features", "run_study",
                     "scorecard", "spectral_features"],
        "explain": ["attention_maps"],
    },
)
__all__ = ["__version__", *__all__]
