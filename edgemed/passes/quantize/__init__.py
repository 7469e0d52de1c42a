"""INT8 post-training quantization; one file per engine (onnxruntime here, OpenVINO/NNCF beside)."""
