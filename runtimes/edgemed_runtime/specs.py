"""One entry point for the preprocessing specs an artifact may carry: 2D or volume.

``spec_from_dict`` reads an artifact's ``"preprocess"`` dict: ``"kind": "volume"`` is a
``VolumeSpec`` (format version 3); no ``kind`` is the 2D ``PreprocessSpec`` (versions 1-2).
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from .errors import InvalidInputError
from .preprocess import PreprocessSpec
from .volume.spec import VOLUME_KIND, VolumeSpec

AnySpec = Union[PreprocessSpec, VolumeSpec]


def spec_from_dict(d: Mapping[str, Any]) -> AnySpec:
    """The spec a ``to_dict`` output describes.

    Raises:
        InvalidInputError: not a mapping, an unknown ``kind``, or what the spec's own
            ``from_dict`` refuses.
    """
    if not isinstance(d, Mapping):
        raise InvalidInputError("a preprocessing spec must be a JSON object", found=type(d).__name__,
                                code="bad-volume-spec")
    kind = d.get("kind")
    if kind is None:
        return PreprocessSpec.from_dict(d)
    if kind == VOLUME_KIND:
        return VolumeSpec.from_dict(d)
    raise InvalidInputError("unknown preprocessing spec kind", expected=f'none (2D) or "{VOLUME_KIND}"',
                            found=repr(kind)[:40], fix="upgrade edgemed-runtime", code="bad-volume-spec")
