"""Shipped ONNX graphs store fp16-exact weights as fp16: half the bytes, identical results."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from jsa_rt.config import get_preset
from jsa_rt.export.onnx_compact import store_weights_fp16
from jsa_rt.export.onnx_export import example_inputs, export_graph
from jsa_rt.model import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(get_preset("tiny"), pretrained=False).eval()
    with torch.no_grad():                       # as the shipped models: weights stored as fp16
        for p in model.parameters():
            p.copy_(p.half().float())
    path = tmp_path_factory.mktemp("onnx") / "tiny.audio.onnx"
    export_graph(model, "audio", path)
    return model, path


def run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_compaction_halves_weights_and_keeps_outputs(exported, tmp_path):
    model, path = exported
    feeds = example_inputs(model.cfg, "audio")
    before = run(path, feeds)
    size_before, size_after = store_weights_fp16(path, min_elements=64)
    assert size_after < 0.85 * size_before      # the fp32 DFT basis is most of this tiny graph
    after = run(path, feeds)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_constants_fp16_cannot_hold_stay_fp32(exported):
    _, path = exported
    store_weights_fp16(path, min_elements=64)
    graph = onnx.load(str(path)).graph
    kept_fp32 = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 64]
    casts = [n for n in graph.node if n.op_type == "Cast" and n.name.endswith("_to_fp32")]
    assert casts, "no weight was converted"
    # the DFT basis of the spectrogram is not fp16-exact: it must keep its fp32 values
    assert any(np.prod(i.dims) == 2 * (get_preset("tiny").n_fft // 2 + 1) * get_preset("tiny").n_fft
               for i in graph.initializer if i.name in kept_fp32)
