"""The napari viewer opens our samples through npe2 (real X server via pytest-xvfb)."""

import numpy as np


def test_open_samples_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segattn", "dsb2018_nuclei")
    assert [l.name for l in viewer.layers] == ["dsb2018_nuclei", "dsb2018_nuclei_gt"]
    viewer.open_sample("napari-segattn", "sct_spinal_cord")
    cord = viewer.layers["sct_t2s"]
    np.testing.assert_allclose(cord.scale, (7.5, 0.5, 0.5), rtol=1e-5)


def test_drag_in_nifti_uses_our_reader(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    viewer.open(str(shared_data / "sct_spine" / "t2.nii.gz"), plugin="napari-segattn")
    assert viewer.layers[-1].data.ndim == 3
