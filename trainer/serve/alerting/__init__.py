"""Turning fight probabilities into alerts, sending them, and keeping them for review.

    policy.py     when to alert: a pure state machine over scored windows (the threshold is applied here)
    sinks/        where alerts go, one sink per file: JSON lines, a webhook, MQTT, the alert store, several at once
    store.py      alerts, their reviews (the verdicts) and camera events in SQLite
    retention.py  what the store keeps and for how long, and the media cap
    zones.py      named polygons of a camera's view; required ones limit where its alerts may be
"""
