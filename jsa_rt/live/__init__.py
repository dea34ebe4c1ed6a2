"""Live localization: camera + microphone in, annotated video out. No torch anywhere in here.

    video.py       camera / file / stream / CSI sources by URI; grabber thread, newest frame wins
    audio.py       microphone (sounddevice) and file sources; the model's audio window
    ring.py        the lock-free ring buffer the microphone callback writes into
    handoff.py     one-item latest-wins hand-off between threads
    preprocess.py  camera frame -> the model's square RGB input
    step.py        one frame through the model (audio branch on its refresh grid, visual branch)
    where.py       Where: one frame's answer, the one type after the backend's Maps
    pipeline.py    capture -> inference thread (owns the backend) -> output thread
    render.py      smoothing, the no-source gate, heatmap overlay, HUD
    outputs.py     sinks for rendered frames, opened by name: window, recording, JSON-lines log
    recorder.py    the mp4 recording (atomic, with its sound)
    locator.py     SoundLocator: the same steps, synchronous, for embedding in your own loop
    devices.py     `jsa-rt devices`     doctor.py  `jsa-rt doctor`
    demo_clip.py   builds the demo clip from real data: segments from demo_scenes.py (stamps or
                   real photos), material from demo_material.py; demo.py runs and scores `jsa-rt demo`
    cli_live.py    argument parsing for live / demo / devices / doctor
"""
