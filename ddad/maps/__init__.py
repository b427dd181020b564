"""The anomaly maps: the map kinds behind one registry (``kinds/``: the nearest good patch in a
pretrained backbone's features, DDAD's comparison, the reconstruction error), whose features
describe a patch (``sources``), the searches over the good bank (``search``, a Gaussian per
position), the good images a map learns from and the folds that score them against references
without them, how every map is finished into a map and an image score (``scoring``), and the
detect threshold chosen from good images' scores at a false-alarm rate.

May import: ddad.errors, ddad.progress, ddad.data, ddad.diffusion and this package.
"""
