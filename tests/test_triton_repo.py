"""`jsa-rt export-triton`: the Triton model repository (configs, graphs, TensorRT README, CLI).

No Triton server runs here: the configs are checked against the ONNX graphs they describe and
the written graphs are run in onnxruntime the way Triton's onnxruntime backend would batch them.
The batch tests use the tiny preset exported with a dynamic batch (the shipped edge-jsa graphs
have a fixed batch of 1, and exporting edge with a dynamic batch takes ~50 s on a 2-core CPU).
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install 'jsa-rt[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'jsa-rt[onnx]')")

from jsa_rt.errors import InputError, JsaError
from jsa_rt.export import triton_repo as tr
from jsa_rt.shipped import WEIGHTS_DIR

TYPES = {"FLOAT": "TYPE_FP32", "UINT8": "TYPE_UINT8"}
NP_TYPES = {"TYPE_FP32": np.float32, "TYPE_UINT8": np.uint8}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """tiny.audio.onnx + tiny.visual.onnx with a dynamic batch axis, exported once."""
    torch = pytest.importorskip("torch", reason="exporting the test graphs needs torch")
    torch.set_num_threads(2)
    from engine_helpers import contrast_model

    from jsa_rt.export.onnx_export import export_all
    out = tmp_path_factory.mktemp("dyn")
    paths = export_all(contrast_model("tiny"), out / "tiny.onnx", graphs=("audio", "visual"),
                       dynamic_batch=True, model_name="tiny", log=lambda *_: None)
    return paths["audio"], paths["visual"]


def io(path):
    """{"inputs"|"outputs": [(name, elem type, dims)]} of an ONNX file; None = dynamic axis."""
    proto = onnx.load(str(path), load_external_data=False)
    def rows(values):
        return [(v.name, onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                 [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim])
                for v in values]
    return {"inputs": rows(proto.graph.input), "outputs": rows(proto.graph.output)}


def expected(rows):
    """What config.pbtxt must say for ONNX rows: batch axis dropped, [] -> [1] + reshape [ ]."""
    return [{"name": n, "data_type": TYPES[t], "dims": [-1 if d is None else d for d in dims[1:]] or [1],
             **({"reshape": {"shape": []}} if len(dims) == 1 else {})} for n, t, dims in rows]


def session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_configs_match_the_onnx_graphs(graphs, tmp_path):
    out = tmp_path / "repo"
    written = tr.write_model_repository(*graphs, out, max_batch=4, instances=2, queue_delay_us=500)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "jsa_audio/1/model.onnx", "jsa_audio/config.pbtxt", "jsa_visual/1/model.onnx", "jsa_visual/config.pbtxt"]
    for name, src in zip(tr.MODELS, graphs):
        cfg = tr.read_config(out / name / "config.pbtxt")
        model = io(out / name / "1" / "model.onnx")
        assert cfg["name"] == name and cfg["backend"] == "onnxruntime" and "platform" not in cfg
        assert cfg["max_batch_size"] == 4
        assert cfg["input"] == expected(model["inputs"]) == expected(io(src)["inputs"])
        assert cfg["output"] == expected(model["outputs"])
        assert all(dims[0] is None for _, _, dims in model["inputs"] + model["outputs"])
        assert cfg["dynamic_batching"] == {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 500}
        assert cfg["instance_group"] == [{"count": 2, "kind": "KIND_GPU"}]
    # the audio graph is copied as is; the visual one loses only its echo of the audio_slot input
    assert (out / "jsa_audio/1/model.onnx").read_bytes() == graphs[0].read_bytes()
    src_out = [r[0] for r in io(graphs[1])["outputs"]]
    assert "audio_slot" in src_out
    assert [r[0] for r in io(out / "jsa_visual/1/model.onnx")["outputs"]] == [n for n in src_out if n != "audio_slot"]
    assert "audio_slot" in [r[0] for r in io(out / "jsa_visual/1/model.onnx")["inputs"]]
    text = (out / "jsa_visual/config.pbtxt").read_text()
    assert "reshape: { shape: [ ] }" in text and "# left out: audio_slot" in text


def test_written_graphs_batch_3_rows_like_single_runs(graphs, tmp_path):
    out = tmp_path / "repo"
    tr.write_model_repository(*graphs, out, max_batch=8, device="cpu")
    audio, visual = (session(out / m / "1" / "model.onnx") for m in tr.MODELS)
    cfg = {m: tr.read_config(out / m / "config.pbtxt") for m in tr.MODELS}
    assert cfg["jsa_visual"]["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    rng = np.random.default_rng(0)

    def feed(spec, batch):       # a request batch shaped by the config: [batch] + dims
        data = {}
        for t in spec:
            shape = (batch, *t["dims"])
            data[t["name"]] = (rng.integers(0, 256, shape, dtype=np.uint8) if t["data_type"] == "TYPE_UINT8"
                               else (0.1 * rng.standard_normal(shape)).astype(np.float32))
        return data

    def run(sess, model, feeds):
        names = [o["name"] for o in cfg[model]["output"]]
        got = dict(zip(names, sess.run(names, feeds)))
        for o in cfg[model]["output"]:   # what Triton checks: batch + dims (or the reshape)
            assert got[o["name"]].dtype == NP_TYPES[o["data_type"]]
            assert got[o["name"]].shape[1:] == tuple(o.get("reshape", {"shape": o["dims"]})["shape"])
        return got

    wave = feed(cfg["jsa_audio"]["input"], 3)
    state = run(audio, "jsa_audio", wave)
    frames = feed([t for t in cfg["jsa_visual"]["input"] if t["name"] == "frame"], 3)
    maps = run(visual, "jsa_visual", {**frames, **{k: state[k] for k in ("audio_query", "audio_slot")}})
    assert all(v.shape[0] == 3 for v in (*state.values(), *maps.values()))
    for row in range(3):
        one = run(audio, "jsa_audio", {k: v[row:row + 1] for k, v in wave.items()})
        alone = run(visual, "jsa_visual", {"frame": frames["frame"][row:row + 1], **one})
        for name, value in (*one.items(), *alone.items()):
            got = state[name] if name in state else maps[name]
            np.testing.assert_allclose(got[row:row + 1], value, atol=1e-4, err_msg=name)


def test_tensorrt_variant_writes_plan_config_and_trtexec_readme(graphs, tmp_path):
    out = tmp_path / "repo"
    tr.write_model_repository(*graphs, out, max_batch=8, backend="tensorrt")
    for name, src in zip(tr.MODELS, graphs):
        folder = out / name
        cfg = tr.read_config(folder / "config.pbtxt")
        assert cfg["platform"] == "tensorrt_plan" and "backend" not in cfg and cfg["max_batch_size"] == 8
        assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
        assert (folder / "1").is_dir() and not any((folder / "1").iterdir())      # the plan goes here
        rows = io(folder / "model.onnx")
        assert cfg["input"] == expected(rows["inputs"]) and cfg["output"] == expected(rows["outputs"])
        readme = (folder / "README.txt").read_text()
        command = next(line.strip() for line in readme.splitlines() if line.strip().startswith("trtexec"))
        assert "--onnx=model.onnx --saveEngine=1/model.plan" in command
        flags = dict(part.split("=", 1) for part in command.split()[1:])
        for flag, batch in (("--minShapes", 1), ("--optShapes", 8), ("--maxShapes", 8)):
            shapes = dict(item.split(":") for item in flags[flag].split(","))
            assert shapes == {n: "x".join(map(str, [batch, *dims[1:]])) for n, _, dims in io(src)["inputs"]}
    assert "audio_slot:1x" in (out / "jsa_visual/README.txt").read_text()
    assert not list(out.rglob("*.plan"))


def test_shipped_fixed_batch_graphs_are_refused_with_the_fix(tmp_path):
    audio, visual = WEIGHTS_DIR / "edge-jsa.audio.onnx", WEIGHTS_DIR / "edge-jsa.visual.onnx"
    if not audio.is_file():
        pytest.skip(f"{audio} is not in this install")
    assert io(audio)["inputs"][0][2][0] == 1                 # why: exported without --dynamic-batch
    with pytest.raises(InputError) as err:
        tr.write_model_repository(audio, visual, tmp_path / "repo")
    msg = str(err.value)
    assert "\n" not in msg and "wave" in msg and "--dynamic-batch" in msg
    assert not (tmp_path / "repo").exists()


def test_existing_repository_is_kept_unless_forced(graphs, tmp_path):
    out = tmp_path / "repo"
    tr.write_model_repository(*graphs, out)
    before = (out / "jsa_audio/config.pbtxt").read_text()
    with pytest.raises(JsaError, match="--force") as err:
        tr.write_model_repository(*graphs, out, max_batch=2)
    assert "\n" not in str(err.value)
    assert (out / "jsa_audio/config.pbtxt").read_text() == before
    (out / "jsa_audio/stale.txt").write_text("old")
    (out / "other_model").mkdir()
    tr.write_model_repository(*graphs, out, max_batch=2, backend="tensorrt", force=True)
    assert tr.read_config(out / "jsa_audio/config.pbtxt")["max_batch_size"] == 2
    assert not (out / "jsa_audio/stale.txt").exists() and not (out / "jsa_audio/1/model.onnx").exists()
    assert (out / "other_model").is_dir()                    # only our two models are replaced


@pytest.mark.parametrize("kwargs, flag", [({"max_batch": 0}, "--max-batch"), ({"instances": 0}, "--instances"),
                                          ({"queue_delay_us": -1}, "--queue-delay-us"),
                                          ({"backend": "tensorrt", "device": "cpu"}, "--device")])
def test_bad_options_are_one_line_errors_before_any_file(graphs, tmp_path, kwargs, flag):
    with pytest.raises(InputError, match=flag) as err:
        tr.write_model_repository(*graphs, tmp_path / "repo", **kwargs)
    assert "\n" not in str(err.value) and not (tmp_path / "repo").exists()


def test_read_config_reads_triton_docs_style_text(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text('# a comment\nname: "m"\nplatform: "tensorrt_plan"  # trailing\nmax_batch_size: 8\n'
                    'input { name: "a" data_type: TYPE_FP32 dims: [ 16 ] }\n'
                    'input { name: "b" data_type: TYPE_INT32 dims: [ 2, -1 ] }\n'
                    'output [ { name: "y" dims: [ 1 ] reshape: { shape: [ ] } } ]\n'
                    'version_policy: { all { } }\ninstance_group [ { count: 2 kind: KIND_CPU } ]\n'
                    'parameters { key: "x" value: { string_value: "a \\"q\\"" } }\n')
    cfg = tr.read_config(path)
    assert cfg["input"] == [{"name": "a", "data_type": "TYPE_FP32", "dims": [16]},
                            {"name": "b", "data_type": "TYPE_INT32", "dims": [2, -1]}]
    assert cfg["output"] == [{"name": "y", "dims": [1], "reshape": {"shape": []}}]
    assert cfg["version_policy"] == {"all": {}} and cfg["max_batch_size"] == 8
    assert cfg["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert cfg["parameters"]["value"]["string_value"] == 'a "q"'
    for bad in ('name: "unclosed\n', "input { name: \"a\"\n", "dims: [ 1, 2\n", "max_batch_size: 8 }\n"):
        path.write_text(bad)
        with pytest.raises(InputError):
            tr.read_config(path)


def test_cli_writes_the_repository_and_says_what_to_run(graphs, tmp_path, capsys):
    from jsa_rt.cli import main
    out = tmp_path / "repo"
    assert main(["export-triton", "--checkpoint", str(graphs[0].parent), "--out", str(out), "--max-batch", "4"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}/ (jsa_audio, jsa_visual; onnxruntime backend, max batch 4); next: docker run")
    assert f"-v {out}:/models nvcr.io/nvidia/tritonserver:" in last and "--model-repository=/models" in last
    assert tr.read_config(out / "jsa_visual/config.pbtxt")["max_batch_size"] == 4
    assert main(["export-triton", "--checkpoint", str(graphs[1]), "--out", str(out), "--backend", "tensorrt",
                 "--force"]) == 0
    assert "next: build the plans" in capsys.readouterr().out.strip().splitlines()[-1]


def test_cli_refuses_bad_flags_with_one_line(graphs, tmp_path, capsys):
    from jsa_rt.cli import main
    for extra, flag in ((["--max-batch", "0"], "--max-batch"), (["--instances", "0"], "--instances")):
        assert main(["export-triton", "--checkpoint", str(graphs[0]), "--out", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"jsa-rt export-triton: error: {flag}"), err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("")
    assert main(["export-triton", "--checkpoint", str(graphs[0]), "--out", str(tmp_path / "r")]) == 2
    assert "--force" in capsys.readouterr().err
    assert not (tmp_path / "r" / "jsa_audio").exists()


def test_cli_exports_a_shipped_model_whose_graphs_have_a_fixed_batch(graphs, tmp_path, capsys, monkeypatch):
    """The default model's shipped graphs are batch 1: the CLI exports its .pt with a dynamic batch
    (through export_all; stubbed here with the tiny graphs, the real export takes ~50 s)."""
    from jsa_rt.shipped import DEFAULT_MODEL
    if not (WEIGHTS_DIR / f"{DEFAULT_MODEL}.audio.onnx").is_file():
        pytest.skip(f"the shipped {DEFAULT_MODEL} graphs are not in this install")
    from jsa_rt.cli import main
    from jsa_rt.export import onnx_export
    calls = []

    def fake_export(model, base, **kwargs):
        calls.append((model, base, kwargs))
        return {"audio": graphs[0], "visual": graphs[1]}
    monkeypatch.setattr(onnx_export, "load_model", lambda ckpt: (("model", ckpt), DEFAULT_MODEL))
    monkeypatch.setattr(onnx_export, "export_all", fake_export)
    assert main(["export-triton", "--out", str(tmp_path / "repo")]) == 0
    (model, base, kwargs), = calls
    assert model[1].endswith(f"{DEFAULT_MODEL}.pt") and base.name == f"{DEFAULT_MODEL}.onnx"
    assert kwargs["dynamic_batch"] is True and tuple(kwargs["graphs"]) == ("audio", "visual")
    text = capsys.readouterr().out
    assert "have no dynamic batch axis" in text and (tmp_path / "repo/jsa_visual/1/model.onnx").is_file()
