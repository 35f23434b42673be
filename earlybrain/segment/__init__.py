"""Tissue segmentation of reconstructed brains: a 3D MONAI network trained on synthetic
images drawn from label maps (domain randomisation), inference, post-processing,
volumetry and left/right asymmetry."""
