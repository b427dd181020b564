"""The anomaly maps: from a reconstruction's error or from the UNet's features against good
patches (nearest, or a Gaussian per position), finished into a map and an image score, and the
detection threshold drawn from held-out good images.

May import: ddad.errors, ddad.progress, ddad.data, ddad.diffusion and this package.
"""
