"""``edgemed release``: one command from a DICOM folder to signed, encrypted, verified and
benchmarked bundles for every target, with one report."""

from .config import ReleaseConfig, load_release_config
from .flow import ReleaseResult, TargetOutcome, release

__all__ = ["ReleaseConfig", "ReleaseResult", "TargetOutcome", "load_release_config", "release"]
