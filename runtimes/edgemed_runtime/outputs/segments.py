"""What each segment of a DICOM SEG is: its label, and its Segmented Property Category / Type.

Defaults: a label name that names a SNOMED CT concept in pydicom's code dictionary ("liver",
"left kidney" -> SCT LeftKidney when it exists) gets that concept as its type and "Anatomical
Structure" (SCT 91723000) as its category; any other name gets "Tissue" (SCT 85756007) and a
local code (scheme ``99EDGEMED``) whose meaning is the label name. ``codes`` overrides both per
label name with ``(category, type)`` pydicom ``Code``s.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from pydicom.sr.coding import Code

from ..errors import InvalidInputError

TISSUE = Code("85756007", "SCT", "Tissue")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
LOCAL_SCHEME = "99EDGEMED"
SegmentCodes = tuple[Code, Code]


def check_label_names(label_names: tuple[str, ...]) -> tuple[str, ...]:
    """The names of labels 1..K, checked: non-empty text of at most 64 characters (DICOM LO),
    no backslash or control characters, unique.

    Raises:
        InvalidInputError: ``bad-label-names``.
    """
    names = tuple(label_names) if not isinstance(label_names, str) else ()
    if not names:
        raise InvalidInputError("no label names were given", code="bad-label-names",
                                expected="a tuple with the names of labels 1..K", found="none")
    for n, name in enumerate(names, start=1):
        if not isinstance(name, str) or not name.strip() or len(name) > 64 or re.search(
                r"[\\\x00-\x1f]", name):
            raise InvalidInputError(f"the name of label {n} is not a valid segment label",
                                    code="bad-label-names",
                                    expected="1-64 characters, no backslash or control characters",
                                    found=f"{type(name).__name__} of length {len(str(name))}")
    if len(set(names)) != len(names):
        raise InvalidInputError("label names repeat", code="bad-label-names",
                                expected="one distinct name per label", found=", ".join(names))
    return names


def default_codes(name: str, number: int) -> SegmentCodes:
    """(category, type) for a label name without an explicit mapping (see the module docstring)."""
    from pydicom.sr.codedict import codes

    keyword = "".join(w[:1].upper() + w[1:] for w in re.split(r"[\s_\-]+", name.strip()) if w)
    try:
        found = getattr(codes.SCT, keyword) if keyword.isidentifier() else None
    except AttributeError:
        found = None
    if isinstance(found, Code):
        return ANATOMICAL_STRUCTURE, found
    return TISSUE, Code(f"L{number}", LOCAL_SCHEME, name)


def segment_codes(names: tuple[str, ...],
                  codes: Mapping[str, SegmentCodes] | None) -> list[SegmentCodes]:
    """One (category, type) per label, from ``codes`` where it names the label, else the default.

    Raises:
        InvalidInputError: ``bad-label-names`` (``codes`` names an unknown label or is not a pair
            of Codes).
    """
    codes = dict(codes or {})
    unknown = sorted(set(codes) - set(names))
    if unknown:
        raise InvalidInputError("segment codes are given for labels that are not in the list",
                                code="bad-label-names", expected=", ".join(names),
                                found=", ".join(map(str, unknown)))
    out = []
    for n, name in enumerate(names, start=1):
        pair: Any = codes.get(name) or default_codes(name, n)
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(c, Code) for c in pair)):
            raise InvalidInputError(f"the codes of label {name!r} are not (category, type)",
                                    code="bad-label-names",
                                    expected="a pair of pydicom.sr.coding.Code", found=type(pair).__name__)
        out.append(pair)
    return out


def segment_descriptions(hd: Any, names: tuple[str, ...], algorithm: tuple[str, str],
                         codes: Mapping[str, SegmentCodes] | None) -> list[Any]:
    """highdicom ``SegmentDescription``s, numbered 1..K, AUTOMATIC, with the algorithm's
    identification (name, version; family "Artificial Intelligence").

    Raises:
        InvalidInputError: ``bad-label-names`` (see ``segment_codes``) or ``bad-algorithm``.
    """
    from pydicom.sr.codedict import codes as dicom_codes

    if not (isinstance(algorithm, tuple) and len(algorithm) == 2 and all(
            isinstance(a, str) and a.strip() and len(a) <= 64 for a in algorithm)):
        raise InvalidInputError("the algorithm must be (name, version)", code="bad-algorithm",
                                expected="two non-empty strings of at most 64 characters",
                                found=type(algorithm).__name__)
    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm[0], version=algorithm[1], family=dicom_codes.DCM.ArtificialIntelligence)
    return [hd.seg.SegmentDescription(
        segment_number=n, segment_label=name, segmented_property_category=cat,
        segmented_property_type=typ, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=ident)
        for n, (name, (cat, typ)) in enumerate(zip(names, segment_codes(names, codes)), start=1)]
