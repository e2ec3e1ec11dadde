"""The composition root: the `breedbot` console script, `breedbot up`, the embedded Redis and
process spawning. It may import every other package; nothing imports it but the harness.
"""
