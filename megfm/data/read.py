"""Read MEG recordings of any system MNE supports, or from a BIDS dataset.

:func:`read_raw` is the single entry point of the data layer: it accepts a path to a FIF,
CTF ``.ds``, KIT ``.con``/``.sqd``, BTi (``c,rf*``) or FIL OPM (``.bin``) recording, a
:class:`mne_bids.BIDSPath`, or a path to a file inside a BIDS dataset (read through
mne-bids when it is installed, so ``events.tsv`` and ``channels.tsv`` are used). It checks
what megfm needs before anything else runs: the file exists, holds MEG channels (reference
channels do not count) and no NaN or infinite samples.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import mne
import numpy as np

from ._fif import check_fif_complete

__all__ = ["find_bids_root", "read_raw"]

logger = logging.getLogger(__name__)

# Samples checked per block when looking for NaN/Inf without loading everything at once.
_FINITE_BLOCK = 100_000


def find_bids_root(path: str | Path) -> Path | None:
    """Return the BIDS root above ``path`` (the folder with ``dataset_description.json``).

    Parameters
    ----------
    path : str | pathlib.Path
        A file or folder.

    Returns
    -------
    root : pathlib.Path | None
        The nearest folder at or above ``path`` that holds ``dataset_description.json``,
        or None when there is none.
    """
    path = Path(path).resolve()
    for folder in [path, *path.parents]:
        if (folder / "dataset_description.json").is_file():
            return folder
    return None


def _is_bids_file(path: Path) -> bool:
    return path.name.startswith("sub-") and find_bids_root(path.parent) is not None


def _read_bids(bids_path, verbose):
    try:
        import mne_bids
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading BIDS data needs mne-bids: pip install 'megfm[bids]' (or mne-bids)."
        ) from exc
    if not isinstance(bids_path, mne_bids.BIDSPath):
        bids_path = mne_bids.get_bids_path_from_fname(bids_path)
    with warnings.catch_warnings():
        # participants.tsv columns such as 'group' are ours, not MNE's subject_info
        warnings.filterwarnings("ignore", message="Unable to map the following column")
        return mne_bids.read_raw_bids(bids_path, verbose=verbose)


def _read_file(path: Path, verbose):
    name = path.name.lower()
    if name.startswith("c,rf"):  # BTi/4D: the data file has no extension
        return mne.io.read_raw_bti(path, head_shape_fname=None, verbose=verbose)
    if name.endswith(".bin") and path.with_suffix("").name.endswith("_meg"):
        return mne.io.read_raw_fil(path, verbose=verbose)
    return mne.io.read_raw(path, verbose=verbose)


def _check_finite(raw: mne.io.BaseRaw, picks: np.ndarray, source: str) -> None:
    """Raise when any picked sample is NaN or infinite (blockwise if not preloaded)."""
    bad: set[int] = set()
    if raw.preload:
        finite = np.isfinite(raw._data[picks]).all(axis=1)
        bad.update(int(p) for p in picks[~finite])
    else:
        for start in range(0, raw.n_times, _FINITE_BLOCK):
            block = raw.get_data(picks=picks, start=start, stop=start + _FINITE_BLOCK)
            finite = np.isfinite(block).all(axis=1)
            bad.update(int(p) for p in picks[~finite])
    if bad:
        names = [raw.ch_names[p] for p in sorted(bad)]
        shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        raise ValueError(
            f"{source}: {len(names)} MEG channel(s) contain NaN or infinite samples ({shown}). "
            "Repair or interpolate them, or drop them with raw.drop_channels(), before "
            "passing the recording to megfm."
        )


def read_raw(path_or_bidspath, *, preload: bool = True, verbose=None) -> mne.io.BaseRaw:
    """Read a MEG recording and check that megfm can use it.

    Parameters
    ----------
    path_or_bidspath : str | pathlib.Path | mne_bids.BIDSPath | mne.io.BaseRaw
        A recording in any format MNE reads (FIF, CTF ``.ds`` folder, KIT ``.con``/``.sqd``,
        BTi ``c,rf*``, FIL OPM ``*_meg.bin``, ...), a :class:`mne_bids.BIDSPath`, or a file
        inside a BIDS dataset (a ``sub-*`` file below a folder with
        ``dataset_description.json``), which is read with :func:`mne_bids.read_raw_bids`.
        A Raw object is checked and returned as is.
    preload : bool
        Load the data into memory (needed by :func:`megfm.preprocess`). When False the
        NaN/Inf check reads the file in blocks.
    verbose : bool | str | int | None
        MNE verbosity for the reader; None shows MNE's warnings only.

    Returns
    -------
    raw : mne.io.Raw
        The recording with all its channels (MEG, reference, stim, ...); units are MNE's
        (T, T/m). :func:`megfm.preprocess` keeps the MEG sensors.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When the file is empty, a truncated FIF file, not a recording MNE can read, has no
        MEG channels, or has NaN or infinite samples in its MEG channels.
    """
    if verbose is None:
        verbose = "warning"
    if isinstance(path_or_bidspath, mne.io.BaseRaw):
        raw = path_or_bidspath
        source = raw.filenames[0] if raw.filenames and raw.filenames[0] else "Raw object"
    elif type(path_or_bidspath).__name__ == "BIDSPath":
        source = str(path_or_bidspath.fpath)
        raw = _read_bids(path_or_bidspath, verbose)
    elif isinstance(path_or_bidspath, (str, Path)):
        path = Path(path_or_bidspath).expanduser()
        source = str(path)
        if not path.exists():
            raise FileNotFoundError(
                f"Recording {path} does not exist. Check the path (CTF recordings are "
                "'.ds' folders, KIT recordings '.con' or '.sqd' files)."
            )
        if path.is_file() and path.stat().st_size == 0:
            raise ValueError(f"{path} is empty (0 bytes): the file was not copied or not "
                             "written completely. Copy it again from the original.")
        if path.name.lower().endswith((".fif", ".fif.gz")):
            # MNE reads a FIF cut at a data-buffer boundary as a shorter recording, with
            # only a warning: refuse it here
            check_fif_complete(path)
        try:
            if _is_bids_file(path):
                raw = _read_bids(path, verbose)
            else:
                raw = _read_file(path, verbose)
        except Exception as exc:  # any reader failure on a damaged file: one clear error
            raise ValueError(
                f"Could not read {path} as an MEG recording ({type(exc).__name__}: {exc}). "
                "megfm reads any format mne.io.read_raw supports (FIF, CTF .ds, KIT "
                ".con/.sqd, BTi, FIL OPM) and BIDS datasets; check that the file is complete."
            ) from exc
    else:
        raise TypeError(
            "Invalid type for 'path_or_bidspath': expected str, pathlib.Path, "
            f"mne_bids.BIDSPath or mne.io.Raw; got {type(path_or_bidspath).__name__}."
        )

    picks = mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])
    if len(picks) == 0:
        types = sorted(set(raw.get_channel_types()))
        raise ValueError(
            f"{source} has no MEG channels (channel types present: {', '.join(types)}; "
            "reference magnetometers do not count). megfm models MEG sensors only: pass an "
            "MEG recording, or fix the channel types with raw.set_channel_types()."
        )
    if preload and not raw.preload:
        raw.load_data(verbose=verbose)
    _check_finite(raw, picks, source)
    logger.info("Read %s: %d MEG channels, %.1f s at %g Hz", source, len(picks),
                raw.times[-1] if raw.n_times else 0.0, raw.info["sfreq"])
    return raw
