"""Source activity and sensor data for each recording state.

* ``rest``: 1/f background on distributed dipoles, alpha (subject-specific peak, 8-12 Hz)
  from occipital/parietal/precuneus generators, theta (4-8 Hz) from frontal and parietal
  regions.
* ``auditory``: the resting activity plus tones every ~1 s in blocks; an M100 (with a small
  M50 and M200) from both auditory cortices.
* ``somatosensory``: the resting activity plus right median-nerve stimuli every ~1.5 s in
  blocks, each optionally followed by a second pulse 500 ms later; M20 and M50 from the
  contralateral (left) postcentral cortex.

Blocks are separated by silent gaps of more than twice the inter-stimulus interval, so
gap-based block detection finds them. Everything is generated in NumPy in the frequency
domain or by FFT convolution (no per-sample Python loops). Sensor noise is white at a
realistic level per coil type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mne.io.constants import FIFF
from scipy.signal import oaconvolve
from threadpoolctl import threadpool_limits

__all__ = ["EVENT_IDS", "STATES", "StateDesign", "STATE_DESIGNS", "simulate_state"]

STATES = ("rest", "auditory", "somatosensory")

#: Event ids written on the stim channel ``STI 014``.
EVENT_IDS = {"tone": 1, "stim": 2, "stim2": 3}

NAM = 1e-9  # nA*m in A*m


@dataclass(frozen=True)
class StateDesign:
    """Timing of a stimulus state.

    Parameters
    ----------
    isi : float
        Mean inter-stimulus interval within a block (s).
    isi_jitter : float
        Uniform jitter of the interval (+/- s).
    block_gap : float
        Silence between blocks (s), more than twice ``isi``.
    event_id : int
        Event id of the stimulus.
    regions : tuple of str
        Regions with an evoked response.
    """

    isi: float
    isi_jitter: float
    block_gap: float
    event_id: int
    regions: tuple[str, ...]

    lead: float = 1.0  # seconds before the first block
    tail: float = 1.0  # seconds after the last stimulus of a block

    def block_seconds(self, block_size: int) -> float:
        """Length of one block of ``block_size`` stimuli (s)."""
        return block_size * self.isi

    def min_duration(self, block_size: int) -> float:
        """Shortest recording holding one block (s)."""
        return self.lead + (block_size - 1) * (self.isi + self.isi_jitter) + self.tail


STATE_DESIGNS = {
    "auditory": StateDesign(isi=1.0, isi_jitter=0.1, block_gap=4.0, event_id=EVENT_IDS["tone"],
                            regions=("auditory_lh", "auditory_rh")),
    "somatosensory": StateDesign(isi=1.5, isi_jitter=0.1, block_gap=5.0,
                                 event_id=EVENT_IDS["stim"], regions=("postcentral_lh",)),
}

PAIRED_PULSE_DELAY = 0.5  # s, second pulse of a pair

# Resting rhythms: baseline rms source amplitudes (nA*m) per region.
_ALPHA_RMS = {"occipital_lh": 6.0, "occipital_rh": 6.0, "parietal_lh": 5.0,
              "parietal_rh": 5.0, "precuneus": 5.0, "supramarginal_lh": 4.0,
              "supramarginal_rh": 4.0}
_THETA_RMS = {"rostral_middle_frontal_lh": 3.5, "rostral_middle_frontal_rh": 3.5,
              "parietal_lh": 2.0, "parietal_rh": 2.0, "precuneus": 3.0,
              "precentral_lh": 2.0, "precentral_rh": 2.0, "cerebellum_lh": 3.0,
              "cerebellum_rh": 3.0}
_TASK_ALPHA = 0.5  # alpha amplitude during task states (eyes open, attention) vs rest
_BACKGROUND_RMS = 7.0  # nA*m per background dipole (1/f)
_REGION_BACKGROUND_RMS = 3.0  # nA*m of 1/f activity in every named region
_PINK_EXPONENT = 1.0  # power ~ 1 / f**exponent

# Sensor noise density per coil type, in T/sqrt(Hz) (T/m/sqrt(Hz) for planar gradiometers).
_NOISE_DENSITY = {
    FIFF.FIFFV_COIL_VV_PLANAR_T1: 3e-13,  # 3 fT/cm/sqrt(Hz)
    FIFF.FIFFV_COIL_VV_MAG_T3: 3e-15,
    FIFF.FIFFV_COIL_CTF_GRAD: 5e-15,
    FIFF.FIFFV_COIL_KIT_GRAD: 4e-15,
    FIFF.FIFFV_COIL_MAGNES_MAG: 5e-15,
}
_OPM_NOISE = 15e-15
_DEFAULT_NOISE = {FIFF.FIFF_UNIT_T: 5e-15, FIFF.FIFF_UNIT_T_M: 3e-13}


def noise_std(chs: list[dict], sfreq: float) -> np.ndarray:
    """Per-sample standard deviation of white sensor noise, shape (n_channels,)."""
    dens = []
    for ch in chs:
        coil = int(ch["coil_type"]) & 0xFFFF
        if coil in _NOISE_DENSITY:
            dens.append(_NOISE_DENSITY[coil])
        elif 8000 <= coil < 9000:
            dens.append(_OPM_NOISE)
        else:
            dens.append(_DEFAULT_NOISE.get(int(ch["unit"]), 5e-15))
    return np.asarray(dens) * np.sqrt(sfreq / 2.0)


def _spectral_sources(rng: np.random.Generator, shapes: np.ndarray, n_times: int) -> np.ndarray:
    """Gaussian processes with amplitude spectra ``shapes`` (n_src, n_freqs) -> (n_src, n)."""
    n_src, n_freqs = shapes.shape
    spec = rng.standard_normal((n_src, n_freqs)) + 1j * rng.standard_normal((n_src, n_freqs))
    spec *= shapes
    spec[:, 0] = 0.0
    return np.fft.irfft(spec, n=n_times, axis=1)


def _unit_rms(shape: np.ndarray, n_times: int) -> np.ndarray:
    """Scale an amplitude spectrum so the process it makes has unit rms."""
    power = 2.0 * (shape[1:] ** 2).sum() / n_times**2
    return shape / np.sqrt(power) if power > 0 else shape


def _bump(freqs: np.ndarray, peak: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((freqs - peak) / width) ** 2)


def resting_sources(subject: dict, n_regions: int, n_background: int, region_names: list[str],
                    sfreq: float, n_times: int, rng: np.random.Generator,
                    alpha_factor: float = 1.0) -> np.ndarray:
    """Source time courses (A*m) of the ongoing activity, shape (n_sources, n_times)."""
    freqs = np.fft.rfftfreq(n_times, 1.0 / sfreq)
    pink = 1.0 / np.maximum(freqs, 1.0) ** (_PINK_EXPONENT / 2)
    pink = _unit_rms(pink, n_times)
    alpha = _unit_rms(_bump(freqs, subject["alpha_peak_hz"], 0.8), n_times)
    theta = _unit_rms(_bump(freqs, subject["theta_peak_hz"], 0.8), n_times)
    n_src = n_regions + n_background
    power = np.zeros((n_src, len(freqs)))
    for i, name in enumerate(region_names):
        a_rms = _ALPHA_RMS.get(name, 1.5) * alpha_factor * subject["alpha_scale"] * np.sqrt(
            subject["alpha_power"].get(name, 1.0))
        t_rms = _THETA_RMS.get(name, 1.5) * subject["theta_scale"] * np.sqrt(
            subject["theta_power"].get(name, 1.0))
        power[i] = ((_REGION_BACKGROUND_RMS * pink) ** 2 + (a_rms * alpha) ** 2
                    + (t_rms * theta) ** 2)
    power[n_regions:] = (_BACKGROUND_RMS * pink) ** 2
    return _spectral_sources(rng, np.sqrt(power), n_times) * NAM


def _auditory_waveform(sfreq: float, latency: float) -> np.ndarray:
    t = np.arange(0, 0.4, 1.0 / sfreq)
    shift = latency - 0.1
    return (-0.35 * np.exp(-0.5 * ((t - 0.05 - shift) / 0.012) ** 2)
            + np.exp(-0.5 * ((t - latency) / 0.02) ** 2)
            - 0.3 * np.exp(-0.5 * ((t - 0.2 - shift) / 0.03) ** 2))


def _somatosensory_waveform(sfreq: float, latency: float) -> np.ndarray:
    t = np.arange(0, 0.3, 1.0 / sfreq)
    width20 = max(0.004, 1.0 / sfreq)
    return (np.exp(-0.5 * ((t - latency) / width20) ** 2)
            - 0.8 * np.exp(-0.5 * ((t - latency - 0.03) / 0.01) ** 2))


def stimulus_times(state: str, duration: float, block_size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Onsets (s) of the stimuli of a task state and their block index."""
    design = STATE_DESIGNS[state]
    onsets, blocks = [], []
    start, block = design.lead, 0
    while True:
        isis = design.isi + rng.uniform(-design.isi_jitter, design.isi_jitter, block_size - 1)
        times = start + np.concatenate([[0.0], np.cumsum(isis)])
        if times[-1] + design.tail > duration:
            break
        onsets.append(times)
        blocks.append(np.full(block_size, block))
        start = times[-1] + design.isi + design.block_gap
        block += 1
    if not onsets:
        return np.zeros(0), np.zeros(0, int)
    return np.concatenate(onsets), np.concatenate(blocks)


def simulate_state(state: str, anatomy, subject: dict, *, sfreq: float, duration: float,
                   block_size: int, paired_pulse: bool, rng: np.random.Generator):
    """Simulate one recording.

    Parameters
    ----------
    state : str
        One of :data:`STATES`.
    anatomy : SubjectAnatomy
        The subject's gains (from :func:`megfm.simulate.sources.make_subject_anatomy`).
    subject : dict
        The subject's drawn parameters (see ``megfm.simulate.cohort``).
    sfreq, duration : float
        Sampling frequency (Hz) and length (s).
    block_size : int
        Stimuli per block in task states.
    paired_pulse : bool
        Whether somatosensory stimuli are pairs 500 ms apart.
    rng : numpy.random.Generator
        The generator of this subject and state.

    Returns
    -------
    data : array, shape (n_channels, n_times)
        Sensor data in T (T/m for planar gradiometers), float32.
    stim : array, shape (n_times,)
        The stim channel (event ids on 2 samples at each onset).
    events : array, shape (n_events, 3)
        MNE events ``[sample, 0, id]``.
    """
    n_times = int(round(duration * sfreq))
    src = resting_sources(subject, anatomy.n_regions, anatomy.gain.shape[1] - anatomy.n_regions,
                          anatomy.region_names, sfreq, n_times, rng,
                          alpha_factor=1.0 if state == "rest" else _TASK_ALPHA)
    stim = np.zeros(n_times)
    events = np.zeros((0, 3), int)
    if state in STATE_DESIGNS:
        design = STATE_DESIGNS[state]
        onsets, blocks = stimulus_times(state, duration, block_size, rng)
        samples = np.round(onsets * sfreq).astype(int)
        n_trials = len(samples)
        block_gain = np.maximum(0.05, 1.0 + subject["habituation_slope"] * blocks)
        trial_gain = block_gain * rng.lognormal(0.0, 0.2, n_trials)
        ev = [np.c_[samples, np.zeros(n_trials, int), np.full(n_trials, design.event_id)]]
        if state == "auditory":
            waveform = _auditory_waveform(sfreq, subject["m100_latency"])
            amp = {"auditory_lh": 30.0, "auditory_rh": 35.0}  # nA*m
        else:
            waveform = _somatosensory_waveform(sfreq, subject["m20_latency"])
            amp = {"postcentral_lh": 20.0}
        impulses = np.zeros(n_times)
        impulses[samples] = trial_gain
        if state == "somatosensory" and paired_pulse:
            second = samples + int(round(PAIRED_PULSE_DELAY * sfreq))
            ok = second < n_times
            impulses[second[ok]] += trial_gain[ok] * subject["gating_ratio"]
            ev.append(np.c_[second[ok], np.zeros(ok.sum(), int),
                            np.full(ok.sum(), EVENT_IDS["stim2"])])
        evoked = oaconvolve(impulses, waveform)[:n_times]
        for name, nam in amp.items():
            i = anatomy.region_names.index(name)
            src[i] += evoked * nam * subject["evoked_scale"] * NAM
        events = np.concatenate(ev)
        events = events[np.argsort(events[:, 0], kind="stable")]
        width = max(2, int(round(0.005 * sfreq)))
        for sample, _, code in events:
            stim[sample:sample + width] = code
    # float32 from here on: files are written in single precision anyway, and it halves
    # the time and memory of the product and the noise
    # the product runs on one BLAS thread: the rounding then does not depend on the number
    # of threads, so files are bit-identical whatever n_jobs
    with threadpool_limits(limits=1, user_api="blas"):
        data = anatomy.gain.astype(np.float32) @ src.astype(np.float32)
    noise = rng.standard_normal(data.shape, dtype=np.float32)
    noise *= noise_std(anatomy.info["chs"], sfreq).astype(np.float32)[:, None]
    data += noise
    return data, stim, events

