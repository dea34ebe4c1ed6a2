"""Latency reports (`jsa-rt profile`, `tools/profile.py`): the top of the house.

It times what the layers below it build and run: model stages (`model.py`, with torch and
onnxruntime stage splits in `torch_stages.py` / `ort_stages.py` and CUDA-graph timing in
`graphs.py`, shared inputs and timers in `timing.py`), the live pipeline (`pipeline.py`), and
writes reports (`report.py`: statistics, schema, files; `video_rate.py`: can it hold N fps;
`markdown.py`: the readable report; `guards.py`: --compare and --fail-if; `plots.py`: the PNG;
`env.py`: the machine and its measured matmul peak).
`cli.py` is the command line. Nothing below this package imports it.
"""
