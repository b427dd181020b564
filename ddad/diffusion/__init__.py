"""The diffusion model: guided-diffusion's UNet presets and checkpoints, training on good
images, noising and denoising (samplers, ensembles, batches that fit the memory), the timing
of its passes, per-image result storage, the processes that share the work and the same bytes
on any number of threads.

May import: ddad.errors, ddad.progress, ddad.data and this package.
"""
