"""Where alerts go. An alert payload is a JSON-able dict built by the caller (path-like values are written as
strings); a sink also hears of the cameras' status changes and of the scored windows around an alert.

Sinks are called from the decode/inference loop, so `send` must not wait on the network: the webhook queues the
alert and a daemon thread delivers it, MQTT hands it to paho's network thread. Call `close` before exit, or
alerts still queued are lost.

    base.py     the Sink interface, CameraPresence, the JSON encoding
    config.py   the `sinks:` section of a config (file, webhook, MQTT broker)
    factory.py  build_sink: the sink a config asks for
    jsonl.py    JSON lines to a file or stdout
    webhook.py  POST to a URL, retried with backoff, undelivered alerts to a file
    mqtt.py     alert events and camera status on an MQTT broker (Frigate's events shape)
    store.py    into the alert store, with retention on a timer
    multi.py    several sinks as one
"""
