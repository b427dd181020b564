"""The evaluation: image and pixel metrics (AUROC, AUPRO, F1-max, AP), the protocol that turns
a category's maps into figures on its confirmation half, the per-pixel baseline measured the
same way, and the pictures (heat maps, overlays, sheets, charts).

May import: ddad.errors, ddad.progress, ddad.data, ddad.diffusion, ddad.maps and this package.
"""
