"""A volume segmentation bundle on the node: the series is read as one volume, predicted once,
and a DICOM SEG (outputs.seg) referencing the source series arrives in Orthanc, once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edgemed_runtime import Artifact, IOSpec, VolumeSpec
from edgemed_runtime.node import Node, load_config
from edgemed_runtime.tasks import TaskSpec
from tests.node.kit import (CREATED, EXPIRES, Model, Orthanc, node_toml, send_pynetdicom,
                            series, wait_for)

SHAPE = (8, 16, 16)  # z, y, x of the synthetic series


def _seg_artifact(path: Path) -> Artifact:
    """A 1x1x1 Conv3d (1 -> 2 channels): voxels above the mid intensity are 'lesion'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([-8.0, 8.0], np.float32).reshape(2, 1, 1, 1, 1), "W")
    b = numpy_helper.from_array(np.array([4.0, -4.0], np.float32), "B")
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "W", "B"], ["logits"])], "seg3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, *SHAPE])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path.mkdir(parents=True)
    onnx.save(m, path / "model.onnx")
    art = Artifact(
        path=path, format="onnx", model_file="model.onnx",
        io=IOSpec(input_shape=(1, 1, *SHAPE), labels=("background", "lesion")),
        preprocess=VolumeSpec(axcodes=None, intensity=(-1024.0, 976.0, 0.0, 1.0), size=SHAPE),
        task=TaskSpec(name="segmentation"),
        metrics={"gate": {"passed": True}}, target={"name": "cpu-x86", "hash": "0" * 64},
        provenance=({"pass": "source", "sha256": "1" * 64, "model": "seg3d"},))
    art.save()
    return art


def test_volume_segmentation_to_seg_in_orthanc(tmp_path: Path, model: Model, orthanc: Orthanc,
                                               node_port: int) -> None:
    import highdicom as hd
    from edgemed.bundle import Recipient, SealOptions, seal

    orthanc.clear()
    art = _seg_artifact(tmp_path / "seg-art")
    bundle = seal(art, tmp_path / "seg.edgemed", publisher_key=model.trust.parent / "publisher.key",
                  options=SealOptions(family="seg3d", release=1, expires=EXPIRES),
                  recipients=[Recipient.load(model.device_pub)], created=CREATED)
    cfg = node_toml(tmp_path, model, port=node_port, dest_port=orthanc.dicom)
    text = cfg.read_text().replace(f'store = "{model.store}"\nfamily = "tiny"\n',
                                   f'bundle = "{bundle}"\n')
    text = text.replace(f'state_dir = "{model.state}"', f'state_dir = "{tmp_path / "st"}"')
    cfg.write_text(text)
    n = Node(load_config(cfg))
    n.start()
    try:
        src = series(SHAPE[0], seed=70)
        assert send_pynetdicom(src, n.port) == [0] * SHAPE[0]
        segs = wait_for(lambda: orthanc.post("/tools/find", {"Level": "Instance",
                                                            "Query": {"Modality": "SEG"}}), 60)
    finally:
        n.stop(drain=True)
    assert len(segs) == 1
    seg = hd.seg.Segmentation.from_dataset(orthanc.instance(segs[0]))
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    refs = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence}
    assert refs <= {d.SOPInstanceUID for d in src} and refs
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion"]
    # the label volume is the model's rule on the source voxels: value > the mid intensity
    mask = np.asarray(seg.get_volume(combine_segments=True).array)
    hu = np.stack([np.frombuffer(d.PixelData, np.int16).reshape(16, 16) for d in src]) - 1024
    assert mask.size == hu.size and 0 < int(mask.sum()) < mask.size
    assert abs(int(mask.sum()) - int((hu > -24).sum())) <= mask.size // 100
