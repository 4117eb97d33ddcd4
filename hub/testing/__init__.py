"""Test and benchmark helpers: a Mosquitto launcher, the simulated crowd driver and device-side clients.

They run real processes and real network paths; nothing here short-cuts the hub's own API.
"""
