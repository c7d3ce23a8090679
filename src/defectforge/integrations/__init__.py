"""Integrations with other libraries: anomalib's DRAEM augmenter, torchvision v2 and
albumentations-style transforms. Each module imports its library (if at all) inside functions,
so importing them needs nothing beyond torch.
"""
