"""Volumes on the build side: DICOM series folders as calibration, validation and gate data.

One sample per series; volumes are read, preprocessed and dropped one at a time (streamed), so
memory does not grow with the number of series.
"""

from .data import SeriesItem, index_series, iter_volumes, load_volume_arrays
from .calibration import sample_volume_calibration

__all__ = ["SeriesItem", "index_series", "iter_volumes", "load_volume_arrays",
           "sample_volume_calibration"]
