"""The DICOM data layer (build side): folders and datasets of DICOM files -> model inputs.

``load_folder`` (flat arrays for --calib/--val), ``build_dataset`` / ``DicomDataset`` (indexed,
patient-split, calibration-sampled, cached), ``deidentify`` (PS3.15 Annex E Basic Profile).
"""

from .cache import ArrayCache
from .dataset import DatasetManifest, DicomDataset, build_dataset, load_manifest
from .deid import deidentify
from .folder import LabelledArrays, load_folder
from .index import Record, SeriesFilter, index_folder
from .sampler import CalibrationSample, calibration_sample
from .split import check_no_leak, patient_split

__all__ = [
    "ArrayCache", "CalibrationSample", "DatasetManifest", "DicomDataset", "LabelledArrays",
    "Record", "SeriesFilter", "build_dataset", "calibration_sample", "check_no_leak",
    "deidentify", "index_folder", "load_folder", "load_manifest", "patient_split",
]
