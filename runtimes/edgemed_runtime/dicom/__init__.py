"""DICOM reading for the device and the build: pydicom + numpy, no torch.

``load_input(path, spec)`` gives exactly the array a model sees for one file. ``read_image``
decodes one frame (or all) into a ``DicomImage``; ``read_dataset`` parses a file defensively.
Every failure is an ``InvalidInputError`` (or ``MissingDependencyError``) with a specific code.
"""

from .guard import read_dataset
from .reader import DicomImage, load_input, read_dataset_image, read_image
from .series import read_series
from .series_filter import SeriesFilter

__all__ = ["DicomImage", "SeriesFilter", "load_input", "read_dataset", "read_dataset_image",
           "read_image", "read_series"]
