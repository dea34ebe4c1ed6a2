"""int8 image encoder for CPUs: onnxruntime static quantization (QDQ) of exported graphs.

Only the image encoder is quantized (its convolutions, ReLU6 clips and residual adds: the nodes
computed from the frame alone), because it is most of the visual branch's work on a CPU. The frame
normalisation, the audio encoder, the slot attention and the maps stay fp32, so the audio graph
is unchanged and the full graph answers as audio + visual do. Weights are int8 per output channel,
activations uint8 per tensor, their ranges calibrated (min-max) on real frames and sounds of a
scene set's val split, never on the splits that are scored.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..audio_io import camera_frames
from ..errors import InputError
from ..runtime.ort_backend import graph_path, run_onnx

QUANTIZED_OPS = ("Conv", "Clip", "Relu", "Add")
# what an image-encoder tensor may come from for the add that joins it to be quantized too
ENCODER_OPS = ("Conv", "Clip", "Relu", "Add", "BatchNormalization")


def open_calibration(cfg, data: Path, split: str = "val"):
    """The scenes to calibrate on, or a one-line error naming the folder (checked before exporting)."""
    from ..train.datasets import guess_format, open_dataset
    if not Path(data).is_dir():
        raise InputError(f"--int8 {data}: no such folder; give a scene set made by `jsa-rt make-scenes`")
    try:
        return open_dataset(guess_format(Path(data), None), Path(data), cfg, split)
    except InputError:
        raise InputError(f"--int8 {data}: no {split} scenes there to calibrate on; give a scene set made by "
                         f"`jsa-rt make-scenes` (it writes a {split} split)") from None


def calibration_samples(cfg, data: Path, split: str = "val", count: int = 128, seed: int = 0):
    """(uint8 frame (1,S,S,3), wave (1,L)) pairs from `count` scenes of a scene set's `split`,
    spread over it (a fixed sample for a seed). Scenes without a visible source count too: the
    camera shows those."""
    dataset = open_calibration(cfg, data, split)
    picks = np.random.default_rng(seed).permutation(len(dataset))[:count]
    for i in sorted(picks.tolist()):
        item = dataset[i]
        if "error" in item:
            continue
        frame = camera_frames(item["image"].numpy()[None])
        yield frame, item["audio"].numpy()[None].astype(np.float32)


def frame_only_nodes(model) -> list[str]:
    """Names of the nodes to quantize: QUANTIZED_OPS computed from the `frame` input alone and
    fed (through non-constant inputs) only by image-encoder ops, which leaves out the frame's
    normalisation and everything the audio reaches."""
    initializers = {t.name for t in model.graph.initializer}
    depends = {i.name: {i.name} for i in model.graph.input}
    producer = {}
    for node in model.graph.node:                       # ONNX nodes are in topological order
        inputs = [x for x in node.input if x and x not in initializers]
        deps = set().union(*(depends.get(x, set()) for x in inputs)) if inputs else set()
        for out in node.output:
            depends[out] = deps
            producer[out] = node.op_type
    chosen = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS or depends[node.output[0]] != {"frame"}:
            continue
        computed = [x for x in node.input if x and depends.get(x)]      # not weights or constants
        if node.op_type == "Conv" or all(producer.get(x) in ENCODER_OPS for x in computed):
            chosen.append(node.name)
    return chosen


def quantize_graph(src: Path, dst: Path, feeds: list[dict]) -> int:
    """Quantize one exported graph's image encoder, calibrated on `feeds` (input name -> array);
    metadata copied, precision "int8". -> the number of nodes quantized."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and BatchNorm folding first, as onnxruntime recommends before quantizing
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        nodes = frame_only_nodes(onnx.load(str(prepared)))
        if not nodes:
            raise InputError(f"{src} has no image-encoder convolution to quantize (an audio graph?)")
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), Feeds(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        proto = onnx.load(str(quantized))
    onnx.helper.set_model_props(proto, {**meta, "jsa_rt.precision": "int8"})
    write_bytes(dst, proto.SerializeToString())
    return len(nodes)


def quantize_export(full: Path, out: Path, data: Path, split: str = "val", count: int = 128,
                    log=print) -> dict[str, Path]:
    """An fp32 export (full + audio + visual) -> its int8 form at `out` (full and visual
    quantized, audio copied), calibrated on `count` scenes of `data`/`split`."""
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(full), load_external_data=False).metadata_props}
    if meta.get("jsa_rt.precision", "fp32") != "fp32":
        raise InputError(f"{full} is {meta['jsa_rt.precision']}; quantize an fp32 export")
    from ..config import ModelConfig
    cfg = ModelConfig.from_dict(json.loads(meta["jsa_rt.config"]))
    samples = list(calibration_samples(cfg, data, split, count))
    log(f"int8: calibrating on {len(samples)} {split} scenes of {data}")
    audio = [run_onnx(graph_path(full, "audio"), {"wave": w}) for _, w in samples]
    feeds = {"full": [{"frame": f, "wave": w} for f, w in samples],
             "visual": [{"frame": f, "audio_query": a["audio_query"], "audio_slot": a["audio_slot"]}
                        for (f, _), a in zip(samples, audio)]}
    paths = {}
    for graph in ("full", "visual"):
        n = quantize_graph(graph_path(full, graph), graph_path(out, graph), feeds[graph])
        log(f"int8: {graph} graph, {n} image-encoder nodes quantized -> {graph_path(out, graph)}")
        paths[graph] = graph_path(out, graph)
    audio_out = graph_path(out, "audio")
    write_bytes(audio_out, graph_path(full, "audio").read_bytes())
    paths["audio"] = audio_out
    return paths
