"""Serving a trained model: windows of frames, scoring, the alert policy, alert sinks, annotation, live cameras.

    windows.py      the model's windows of a frame stream: every stride, the tail, short-video padding
    scoring.py      `fightwatch score`: a video file in windows, output.json entries
    alerts.py       when to alert: a pure state machine over scored windows, per camera
    annotate.py     label and probability drawn on the frames, the probability plot, the GIF
    sinks.py        where alerts go: JSON lines, a webhook, the alert store, several at once
    mqtt_sink.py    alerts and camera status on an MQTT broker, in Frigate's events shape
    alert_store.py  alerts, their reviews and camera events in SQLite, and what retention deletes
    sources.py      camera sources (files, streams, devices), their ids and redacted URLs
    cameras.py      one decode thread per camera: stream time, windows, reconnect with backoff
    window_queue.py the bounded per-camera queue between decode threads and inference
    snapshots.py    an alert's JPEG snapshot and mp4 clip, written off the inference thread
    monitor.py      `fightwatch watch`: cameras batched through one model, alerts raised and ended
"""
