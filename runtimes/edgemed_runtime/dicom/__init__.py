"""DICOM reading for the device and the build: pydicom + numpy, no torch.

``load_input(path, spec)`` gives exactly the array a model sees for one file.
"""

from .reader import DicomImage, load_input, read_image

__all__ = ["DicomImage", "load_input", "read_image"]
