"""napari-segattn: attention in medical image segmentation, in napari and headless."""

__version__ = "0.1.0"
