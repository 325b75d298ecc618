"""Turning video into fight probabilities, for files (`fightwatch score`) and live cameras (`fightwatch watch`).

    windows.py       the model's windows of a frame stream: every stride, the tail, short-video padding
    scoring.py       a video file in windows through the model, output.json entries
    regions.py       where a window moves: square regions (and the whole frame) the model scores, their crops
    region_memory.py which of a live window's views are scored, which keep a moment-old calm score
    class_names.py   the class names of a model's outputs (fightwatch's two, Kinetics-400's, or a file's)
    annotate.py      label and probability drawn on the frames, the probability plot, the GIF
    sources.py       camera sources (files, streams, devices), their ids and redacted URLs
    cameras.py       one decode thread per camera: stream time, windows, stall detection, reconnect with backoff
    window_queue.py  the bounded per-camera queue between decode threads and inference
    snapshots.py     an alert's JPEG snapshot and mp4 clip, written off the inference thread
    watch_config.py  the `watch:` section of a config
    monitor.py       the watch loop: cameras batched through one model, alerts raised and ended
"""
