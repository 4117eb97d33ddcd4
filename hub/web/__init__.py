"""The hub's web UI: annotators answer tasks in a browser, operators watch the hub and steer retraining.

Served by Flask (werkzeug's threaded server) inside the hub process; it calls the same AnnotatorAPI as the
simulated crowd. Start it through `HubApp` with `web.enabled: true` and a `web.secret_key`.
"""
