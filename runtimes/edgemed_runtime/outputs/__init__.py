"""Results written on the device: DICOM SEG (highdicom) and NIfTI (nibabel) on a ``Volume``'s grid.

Both packages are the runtime's ``outputs`` extra (``pip install 'edgemed-runtime[outputs]'``),
imported only when a writer runs. See docs/outputs.md.
"""

from .nifti import nifti_bytes, nifti_image, ras_affine, write_nifti
from .seg import seg_bytes, seg_dataset, write_seg

__all__ = ["nifti_bytes", "nifti_image", "ras_affine", "seg_bytes", "seg_dataset", "write_nifti",
           "write_seg"]
