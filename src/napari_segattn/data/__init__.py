"""Data pipeline: reading files, normalisation, augmentation, 2D sample data sets, Otsu masks."""

from .augment import Augmenter, tv_smooth
from .corrections import error_regions, paint_largest_errors, simulate_correction
from .dataset import SegmentationDataset
from .datasets import dsb2018_nuclei, isbi2012_em, load_mni152, mni152, mni152_tissue_labels, sct_spine, shared_data_root
from .errors import DataError
from .io import read_image, read_volume
from .labels import check_finite, to_label_map
from .normalization import Normalization
from .otsu import otsu_mask
from .tiles import tile_pairs

__all__ = [
    "error_regions", "paint_largest_errors", "simulate_correction",
    "tile_pairs",
    "DataError",
    "read_image",
    "read_volume",
    "Normalization",
    "Augmenter",
    "tv_smooth",
    "SegmentationDataset",
    "otsu_mask",
    "to_label_map",
    "check_finite",
    "mni152_tissue_labels",
    "isbi2012_em",
    "load_mni152",
    "mni152",
    "sct_spine",
    "dsb2018_nuclei",
    "shared_data_root",
]
