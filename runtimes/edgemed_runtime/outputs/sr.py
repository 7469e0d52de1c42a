"""Classification results as a DICOM Comprehensive SR (highdicom, a TID 1500 Measurement Report).

One measurement group (TID 1501) per analysed instance: the finding (the top class, a coded
qualitative evaluation), its probability (a TID 300 measurement, unit ``1``), the algorithm
(model name and version; the bundle id in the tracking identifier) and the source image it was
computed from. The document inherits patient and study from the source instances (highdicom's
``evidence``); its UIDs are given by the caller, so writing the same result twice gives the
same instance (what makes a re-delivery after a crash idempotent in the PACS).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InvalidInputError
from .deps import require

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

CODING_SCHEME = "99EDGEMED"  # private coding scheme for model labels (PS3.16 8.2: 99 prefix)
FINDING = ("finding", "Model finding")
PROBABILITY = ("probability", "Probability of the finding")
MANUFACTURER = "edgemed"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@dataclass(frozen=True)
class ModelInfo:
    """What produced the result: the model's name (family), version and bundle id."""

    name: str
    version: str
    bundle_id: str


@dataclass(frozen=True)
class Finding:
    """The result for one source instance: ``index`` into the evidence list, the top label and
    its probability (0..1); ``whole_series``: the result is the whole series' (a volume model),
    and the group references every source instance."""

    index: int
    label: str
    probability: float
    whole_series: bool = False


def _code(hd: Any, value: str, meaning: str) -> Any:
    return hd.sr.CodedConcept(value=value[:16], scheme_designator=CODING_SCHEME,
                              meaning=meaning[:64])


def _check(evidence: Sequence["Dataset"], findings: Sequence[Finding]) -> None:
    if not evidence:
        raise InvalidInputError("an SR needs at least one source instance", code="bad-result",
                                expected=">= 1 source instance", found="0")
    for f in findings:
        if not 0 <= f.index < len(evidence):
            raise InvalidInputError("a finding names no source instance", code="bad-result",
                                    expected=f"index 0..{len(evidence) - 1}", found=str(f.index))
        if not 0.0 <= f.probability <= 1.0:
            raise InvalidInputError("a probability is outside 0..1", code="bad-result",
                                    expected="0 <= p <= 1", found=f"{f.probability:.4g}")


def _group(hd: Any, model: ModelInfo, f: Finding, sources: Sequence["Dataset"], uid: str) -> Any:
    from pydicom.sr.codedict import codes

    algo = hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.version[:64])
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid, identifier=f"bundle {model.bundle_id} instance {f.index}"[:64]),
        algorithm_id=algo,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            name=_code(hd, *FINDING), value=_code(hd, f.label, f.label))],
        measurements=[hd.sr.Measurement(
            name=_code(hd, *PROBABILITY), value=float(f.probability),
            unit=codes.UCUM.NoUnits, algorithm_id=algo)],
        source_images=[hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=str(source.SOPClassUID),
            referenced_sop_instance_uid=str(source.SOPInstanceUID)) for source in sources],
    )


def classification_sr(
    evidence: Sequence["Dataset"],
    findings: Sequence[Finding],
    model: ModelInfo,
    *,
    series_uid: str,
    sop_uid: str,
    device_uid: str,
) -> "Dataset":
    """Build the SR.

    Args:
        evidence: the source instances' datasets (headers suffice), all of one study.
        findings: one per analysed instance (instances that could not be read have none).
        model: name, version and bundle id of the model.
        series_uid, sop_uid: the SR's Series and SOP Instance UIDs.
        device_uid: the observer device's UID (the node).
    Returns:
        the SR dataset (Comprehensive SR, final, complete).
    Raises:
        InvalidInputError: ``bad-result`` (no evidence, a finding without source, p not in 0..1).
        MissingDependencyError: highdicom is not installed.
    """
    hd = require("highdicom")
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    _check(evidence, findings)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name="edgemed node", model_name=model.name[:64],
            manufacturer_name=MANUFACTURER))
    groups = [_group(hd, model, f, list(evidence) if f.whole_series else [evidence[f.index]],
                     generate_uid(entropy_srcs=[sop_uid, str(f.index)]))
              for f in findings]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion
        if str(evidence[0].get("Modality", "")) == "CT" else codes.DCM.ImagingProcedure,
        imaging_measurements=groups or None,
        title=codes.DCM.ImagingMeasurementReport)
    sr = hd.sr.ComprehensiveSR(
        evidence=list(evidence), content=report[0], series_instance_uid=series_uid,
        series_number=9901, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=True, record_evidence=False,
        series_description=f"edgemed {model.name} {model.version}"[:64])
    sr.CurrentRequestedProcedureEvidenceSequence = _evidence(evidence)
    return sr


def _evidence(evidence: Sequence["Dataset"]) -> Any:
    """The Current Requested Procedure Evidence Sequence of the source instances (what
    highdicom's ``record_evidence`` finds by searching the content tree, built directly: every
    source instance is referenced by a finding or listed as evidence)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    studies: dict[str, dict[str, list["Dataset"]]] = {}
    for ds in evidence:
        studies.setdefault(str(ds.StudyInstanceUID), {}).setdefault(
            str(ds.SeriesInstanceUID), []).append(ds)
    items = []
    for study_uid, by_series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        series_items = []
        for series_uid, instances in by_series.items():
            se = Dataset()
            se.SeriesInstanceUID = series_uid
            refs = []
            for ds in instances:
                ref = Dataset()
                ref.ReferencedSOPClassUID = ds.SOPClassUID
                ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
                refs.append(ref)
            se.ReferencedSOPSequence = DicomSequence(refs)
            series_items.append(se)
        study.ReferencedSeriesSequence = DicomSequence(series_items)
        items.append(study)
    return DicomSequence(items)


def sr_bytes(ds: "Dataset") -> bytes:
    """The SR as DICOM Part 10 bytes (its own transfer syntax, explicit VR little endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def read_findings(ds: "Dataset") -> list[tuple[str, str, float]]:
    """(referenced SOP Instance UID, label, probability) of every group of an SR written by
    ``classification_sr`` (what a test or a viewer reads back).

    Raises:
        InvalidInputError: ``bad-result`` (not a Comprehensive SR).
    """
    if str(ds.get("SOPClassUID", "")) != COMPREHENSIVE_SR:
        raise InvalidInputError("not a Comprehensive SR", code="bad-result",
                                expected=COMPREHENSIVE_SR, found=str(ds.get("SOPClassUID", "none")))
    return _walk(ds)


def _walk(ds: "Dataset") -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    for group in getattr(ds, "ContentSequence", []):
        if getattr(group, "ValueType", "") != "CONTAINER":
            continue
        for g in getattr(group, "ContentSequence", []):
            label, prob, ref = None, None, None
            for it in getattr(g, "ContentSequence", []):
                name = it.ConceptNameCodeSequence[0].CodeValue
                if it.ValueType == "CODE" and name == FINDING[0]:
                    label = str(it.ConceptCodeSequence[0].CodeValue)
                elif it.ValueType == "NUM" and name == PROBABILITY[0]:
                    prob = float(it.MeasuredValueSequence[0].NumericValue)
                elif it.ValueType == "IMAGE":
                    ref = str(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            if label is not None and prob is not None and ref is not None:
                out.append((ref, label, prob))
    return out
