"""Sensor locations for small synthetic ``mne.io.RawArray`` fixtures (shared by the tests)."""

import numpy as np


def place_on_circle(info, angles) -> None:
    """Put channel ``i`` at angle ``angles[i]`` on a 10 cm ring, 5 cm up, facing outwards.

    ``loc[3:6]`` (the planar-gradiometer direction) is tangential, ``loc[9:12]`` (the coil
    normal) radial, so SensorGeometry sees distinct positions and orientations.
    """
    for ch, angle in zip(info["chs"], angles, strict=True):
        pos = 0.1 * np.array([np.cos(angle), np.sin(angle), 0.5])
        ch["loc"][:3] = pos
        ch["loc"][3:6] = [-np.sin(angle), np.cos(angle), 0.0]
        ch["loc"][6:9] = [0.0, 0.0, 1.0]
        ch["loc"][9:12] = pos / np.linalg.norm(pos)
