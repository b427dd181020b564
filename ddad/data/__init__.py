"""The data: photographs in MVTec AD's layout, from a folder, MVTec AD's archive (a checked,
resumable download and a safe extraction) or the synthetic generator; each image read and sized
as the model sees it; the test images' seeded tuning and confirmation halves.

May import: ddad.errors, ddad.progress and this package.
"""
