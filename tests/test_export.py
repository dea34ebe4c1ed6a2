"""ONNX export: parity with the PyTorch model (onnxruntime CPU), graph inspection for
TensorRT 10.3, the fp16 graph's fp32 islands, the split audio/visual graphs, the plugin node.

fp16 tolerances (documented, vs the fp32 PyTorch model): heatmap 0.05 (after three min-max
normalisations a 1e-3 change of a 7x7 map moves upsampled pixels by ~1e-2), aud/img maps 1e-3,
target slots and confidence 5e-3; the heatmap peak is the same on real images.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from engine_helpers import contrast_model, real_inputs
from jsa_rt.export import onnx_checks, onnx_export as oe
from jsa_rt.model import random_model
from jsa_rt.paths import file_sha256
from jsa_rt.model.wrappers import MAP_OUTPUTS, RawLocalizer
from jsa_rt.runtime.ort_backend import run_onnx

FP16_TOL = {"heatmap": 0.05, "aud": 1e-3, "img": 1e-3, "image_slot": 5e-3, "audio_slot": 5e-3,
            "confidence": 5e-3}


@pytest.fixture(scope="module", params=["tiny", pytest.param("edge", marks=pytest.mark.slow)])
def exported(request, tmp_path_factory):
    torch.set_num_threads(2)
    preset = request.param
    model = contrast_model(preset)
    out = tmp_path_factory.mktemp(f"onnx-{preset}")
    paths = {prec: oe.export_all(model, out / f"{preset}.{prec}.onnx", precision=prec,
                                 graphs=("full",), model_name=preset, log=lambda *_: None)["full"]
             for prec in ("fp32", "fp16")}
    return model, paths


def reference(model, feeds):
    with torch.no_grad():
        outs = RawLocalizer(model)(torch.from_numpy(feeds["frame"]), torch.from_numpy(feeds["wave"]))
    return {n: o.numpy() for n, o in zip(MAP_OUTPUTS, outs)}


def input_sets(cfg):
    frame, wave = real_inputs(cfg)
    return {"synthetic": oe.example_inputs(cfg), "real": {"frame": frame[None], "wave": wave[None]}}


def peak(a):
    return np.unravel_index(np.argmax(a[0]), a[0].shape)


def test_fp32_graph_matches_pytorch_within_1e_4(exported):
    model, paths = exported
    for name, feeds in input_sets(model.cfg).items():
        ref = reference(model, feeds)
        assert ref["heatmap"].std() > 0.05, "degenerate maps would make this test meaningless"
        got = run_onnx(paths["fp32"], feeds)
        for out in MAP_OUTPUTS:
            assert got[out].shape == ref[out].shape and got[out].dtype == np.float32
            err = np.abs(got[out] - ref[out]).max()
            assert err <= 1e-4, f"{name} {out}: max error {err:.2e}"


def test_fp16_graph_within_documented_tolerance_and_same_peak(exported):
    model, paths = exported
    sets = input_sets(model.cfg)
    for name, feeds in sets.items():
        ref = reference(model, feeds)
        got = run_onnx(paths["fp16"], feeds)
        for out in MAP_OUTPUTS:
            err = np.abs(got[out] - ref[out]).max()
            assert err <= FP16_TOL[out], f"{name} {out}: fp16 error {err:.2e} > {FP16_TOL[out]}"
        if name == "real":     # the same peak, up to a tie between neighbouring pixels of the upsampled map
            (y, x), (ry, rx) = peak(got["heatmap"]), peak(ref["heatmap"])
            assert max(abs(y - ry), abs(x - rx)) <= 2 and ref["heatmap"][0][y, x] >= 0.999
        else:   # a noise frame can have near-tied maxima: the fp16 peak must be one of them
            assert ref["heatmap"][0][peak(got["heatmap"])] >= 0.97


def test_graph_is_raw_in_maps_out_for_tensorrt_10_3(exported):
    model, paths = exported
    cfg = model.cfg
    for prec, path in paths.items():
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert onnx_checks.OPSET_RANGE[0] <= onnx_checks.default_opset(proto) <= onnx_checks.OPSET_RANGE[1]
        assert onnx_checks.unsupported_ops(proto) == {}
        assert not any(n.op_type in ("Einsum", "STFT", "DFT", "Loop") for n in proto.graph.node)
        ins = {i.name: i.type.tensor_type for i in proto.graph.input}
        assert ins["frame"].elem_type == TensorProto.UINT8
        assert [d.dim_value for d in ins["frame"].shape.dim] == [1, cfg.image_size, cfg.image_size, 3]
        assert ins["wave"].elem_type == TensorProto.FLOAT
        assert [d.dim_value for d in ins["wave"].shape.dim] == [1, cfg.num_samples]
        outs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
        assert list(outs) == list(MAP_OUTPUTS) and set(outs.values()) == {TensorProto.FLOAT}
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["jsa_rt.precision"] == prec and meta["jsa_rt.graph"] == "full"
        assert json.loads(meta["jsa_rt.config"]) == cfg.to_dict()
        assert "RGB" in meta["jsa_rt.channel_order"]
        # the slot attention's eps survived the exporter (onnxscript's rewriter drops +1e-8)
        islands = onnx_checks.softmax_islands(proto)
        assert len(islands) >= 2 * cfg.iterations
        assert all(("Add", TensorProto.FLOAT) in i["followers"] for i in islands)


def test_fp16_graph_keeps_softmax_eps_renorm_frontend_and_maps_in_fp32(exported):
    _, paths = exported
    proto = onnx.load(str(paths["fp16"]))
    weights = onnx_checks.float_initializer_types(proto)
    assert weights["FLOAT16"] > 10 * weights.get("FLOAT", 0), "the encoders must really be fp16"
    for island in onnx_checks.softmax_islands(proto):
        assert island["input"] == TensorProto.FLOAT and island["output"] == TensorProto.FLOAT
        assert {op for op, _ in island["followers"]} >= {"Add", "ReduceSum", "Div"}
        assert all(t == TensorProto.FLOAT for _, t in island["followers"]), island
    types = onnx_checks.tensor_types(proto)
    for node in proto.graph.node:
        if node.op_type in ("Log", "Resize", "ReduceMin"):     # front end, upsampling, min-max
            assert types[node.output[0]] == TensorProto.FLOAT, f"{node.op_type} must stay fp32"
    # the only fp32 convolution is the spectrogram's (fixed DFT basis); the encoders are fp16
    conv_types = [types.get(n.input[1]) for n in proto.graph.node if n.op_type == "Conv"]
    assert conv_types.count(TensorProto.FLOAT) == 1 and len(conv_types) > 1


def test_split_graphs_compose_to_the_full_graph_and_cli(tmp_path, capsys):
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    oe.add_parser(sub)
    args = parser.parse_args(["export-onnx", "--preset", "tiny", "--out", str(tmp_path / "t.onnx")])
    assert oe.run(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "exported 3 graph(s)" in last and "jsa-rt build-engine" in last
    cfg = contrast_model("tiny").cfg
    feeds = oe.example_inputs(cfg)
    full = run_onnx(tmp_path / "t.onnx", feeds)
    audio = run_onnx(tmp_path / "t.audio.onnx", {"wave": feeds["wave"]})
    assert set(audio) == {"audio_query", "audio_slot"}
    assert audio["audio_query"].shape == (1, cfg.num_slots, cfg.dim)
    visual = run_onnx(tmp_path / "t.visual.onnx", {"frame": feeds["frame"], **audio})
    for out in MAP_OUTPUTS:
        np.testing.assert_allclose(visual[out], full[out], atol=1e-5, err_msg=out)


def test_unknown_graph_names_and_presets_are_refused_before_any_export(tmp_path, capsys):
    from jsa_rt.cli import main
    for extra, flag in ((["--graphs", "full,nosuch"], "--graphs"), (["--graphs", ","], "--graphs"),
                        (["--preset", "huge"], "--preset")):
        with pytest.raises(SystemExit) as stop:
            main(["export-onnx", "--preset", "tiny", "--out", str(tmp_path / "t.onnx"), *extra])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"argument {flag}" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []                # not even the full graph


def test_dynamic_batch_rows_match_single_runs(tmp_path):
    model = contrast_model("tiny")
    path = oe.export_all(model, tmp_path / "d.onnx", graphs=("full",), dynamic_batch=True,
                         log=lambda *_: None)["full"]
    proto = onnx.load(str(path))
    assert not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    batch = oe.example_inputs(model.cfg, batch=3, seed=1)
    together = run_onnx(path, batch)
    for row in range(3):
        alone = run_onnx(path, {k: v[row:row + 1] for k, v in batch.items()})
        for out in MAP_OUTPUTS:
            np.testing.assert_allclose(together[out][row:row + 1], alone[out], atol=1e-5)


def test_plugin_export_has_a_tensorrt_plugin_node_with_schema(tmp_path):
    from jsa_rt.export import trt_plugins
    model = contrast_model("tiny")
    path = oe.export_all(model, tmp_path / "p.onnx", graphs=("full",), plugins="triton",
                         log=lambda *_: None)["full"]
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.domain == trt_plugins.NAMESPACE]
    assert len(nodes) == 2 * model.cfg.iterations              # both modalities, every iteration
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert nodes[0].op_type == trt_plugins.OP and attrs["plugin_namespace"] == b"jsa_rt"
    assert attrs["aot"] == 1 and attrs["eps"] == pytest.approx(model.cfg.attn_eps)
    assert onnx.defs.has(trt_plugins.OP, trt_plugins.NAMESPACE)   # the explicit OpSchema
    onnx.checker.check_model(proto)
    assert onnx_checks.unsupported_ops(proto, plugin_domains=("jsa_rt",)) == {}
    assert "jsa_rt::slot_attention_step" in onnx_checks.unsupported_ops(proto)


def test_build_engine_graphs_follow_the_checkpoint_file_not_its_name(tmp_path, monkeypatch):
    """build-engine exports a checkpoint's graphs into the engine cache once and reuses them,
    without torch, while the file is unchanged; a retrained file at the same path (same name)
    gets new graphs instead of its predecessor's."""
    from jsa_rt.model import build_model
    from jsa_rt.model.checkpoint import save_checkpoint
    ckpt, root = tmp_path / "run" / "best.pt", tmp_path / "engines"
    torch.manual_seed(0)
    save_checkpoint(ckpt, build_model("tiny", pretrained=False))
    first = oe.export_for_engine(str(ckpt), "fp32", "none", ["visual"], root=root)["visual"]
    assert first == root / "best" / "onnx" / "best.visual.onnx"
    graph = first.read_bytes()

    def no_export(*_):
        raise AssertionError("the unchanged checkpoint was loaded and exported again")
    with monkeypatch.context() as m:
        m.setattr(oe, "load_model", no_export)
        assert oe.export_for_engine(str(ckpt), "fp32", "none", ["visual"], root=root)["visual"] == first
    torch.manual_seed(1)
    save_checkpoint(ckpt, build_model("tiny", pretrained=False))      # retrained: other weights
    again = oe.export_for_engine(str(ckpt), "fp32", "none", ["visual"], root=root)["visual"]
    assert again == first and again.read_bytes() != graph
    stamp = json.loads((root / "best" / "onnx" / "best.source.json").read_text())
    assert stamp["graphs"] == ["visual"] and stamp["checkpoint_sha256"] == file_sha256(ckpt)


def test_ezvsl_checkpoint_exports_aud_and_img_and_runs_on_onnxruntime(tmp_path, capsys):
    """EZ-VSL's aud map is its img map (one tensor): the graphs must still have both outputs,
    or `live` / `SoundLocator` on the export fail with KeyError: 'aud'."""
    from jsa_rt.cli import main
    from jsa_rt.model.checkpoint import save_checkpoint
    from jsa_rt.runtime import load_backend
    model = random_model("tiny", kind="ezvsl")
    save_checkpoint(tmp_path / "ez.pt", model)
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "ez.pt"), "--out", str(tmp_path / "ez.onnx")]) == 0
    for graph in ("ez.onnx", "ez.visual.onnx"):
        assert [o.name for o in onnx.load(str(tmp_path / graph)).graph.output] == list(MAP_OUTPUTS)
    feeds = oe.example_inputs(model.cfg)
    full = run_onnx(tmp_path / "ez.onnx", feeds)
    np.testing.assert_array_equal(full["aud"], full["img"])
    backend = load_backend("onnxruntime", str(tmp_path / "ez.onnx"), device="cpu")
    try:
        maps = backend.run_visual(feeds["frame"][0], backend.run_audio(feeds["wave"][0]))
        np.testing.assert_allclose(maps.aud, full["aud"][0], atol=1e-5)
        np.testing.assert_allclose(maps.heatmap, full["heatmap"][0], atol=1e-5)
    finally:
        backend.close()


def test_export_at_output_stride_16_matches_pytorch_on_the_finer_grid(tmp_path, capsys):
    """`export-onnx --image-size --stride 16`: the dilated EfficientNet exports (ONNX Conv
    dilations) and its graph equals the PyTorch model on the 2x finer grid; the file is named by
    its grid, and a stride the encoder lacks is a one-line error."""
    from jsa_rt.cli import main
    from jsa_rt.model import on_grid
    from jsa_rt.model.checkpoint import save_checkpoint
    torch.set_num_threads(2)
    small = on_grid(contrast_model("edge"), 128)               # 4 x 4 tokens at stride 32: fast
    save_checkpoint(tmp_path / "edge.pt", small)
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "edge.pt"), "--stride", "16",
                 "--graphs", "full"]) == 0
    graph = tmp_path / "edge.128s16.onnx"
    assert str(graph) in capsys.readouterr().out
    fine = on_grid(small, 128, 16).eval()
    feeds = oe.example_inputs(fine.cfg)
    ref, got = reference(fine, feeds), run_onnx(graph, feeds)
    assert got["aud"].shape[-2:] == (8, 8) and ref["heatmap"].std() > 0.05
    for out in MAP_OUTPUTS:
        assert np.abs(got[out] - ref[out]).max() <= 1e-4, out
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "edge.pt"), "--stride", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "image_stride 8" in err and "choose 32 or 16" in err, err
