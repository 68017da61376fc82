"""Simulated multi-state MEG cohorts with planted ground truth, on any sensor array.

* :func:`sensor_array` - synthetic arrays (``"vectorview"``, ``"ctf275"``, ``"kit160"``,
  ``"bti248"``, ``"opm"``) or a user ``info``.
* :func:`simulate_cohort` - subjects x states -> FIF or BIDS files, ``participants.tsv`` and
  ``ground_truth.json``.
* :data:`GROUPS` - built-in groups (``HC``, ``migraine``, ``APTH``, ``PPTH``) and their
  literature-sized default effects (:class:`GroupEffects`).

See ``docs/simulator.md``.
"""

from .arrays import ARRAY_KINDS, sensor_array
from .cohort import STIM_CHANNEL, simulate_cohort
from .effects import GROUPS, SUBJECT_SD, GroupEffects, resolve_groups
from .sources import REGIONS
from .states import EVENT_IDS, STATES

__all__ = ["ARRAY_KINDS", "EVENT_IDS", "GROUPS", "REGIONS", "STATES", "STIM_CHANNEL",
           "SUBJECT_SD", "GroupEffects", "resolve_groups", "sensor_array", "simulate_cohort"]
