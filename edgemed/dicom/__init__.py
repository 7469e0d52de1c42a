"""The DICOM data layer (build side): folders and datasets of DICOM files -> model inputs."""

from .folder import LabelledArrays, load_folder

__all__ = ["LabelledArrays", "load_folder"]
