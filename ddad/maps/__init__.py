"""The anomaly maps: from a reconstruction's error or from the UNet's features against good
patches (nearest, or a Gaussian per position), finished into a map and an image score, the
folds that score good training images against references without them, and the detection
threshold chosen from good images' scores at a false-alarm rate.

May import: ddad.errors, ddad.progress, ddad.data, ddad.diffusion and this package.
"""
