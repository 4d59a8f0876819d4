"""Real-time pipeline: audio sources, VAD, engine, timeline.

Importing this package is cheap and torch-free; the GUI imports
`realtime.types` and `realtime.timeline` only.
"""
