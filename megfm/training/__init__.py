"""Training layer: the Lightning data module, the pretraining module and :func:`pretrain`.

Only this layer (and :mod:`megfm.evaluate.finetune`) imports Lightning. Names load lazily,
so :class:`PretrainConfig` (which the command line reads to build its options) imports
neither torch nor Lightning.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["PretrainConfig"],
        "_hardware": ["adamw_kwargs", "compile_model"],
        "datamodule": ["MEGDataModule"],
        "module": ["PretrainModule"],
        "pretrain": ["load_metrics", "pretrain", "read_run"],
    },
)
