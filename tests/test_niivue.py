"""NIfTI bytes for the NiiVue viewer (medseg_core.niivue, issue 18 item 5): voxels land where the source
file put them, window in cal_min/cal_max, exact label colours in the RGBA overlay, reduced grids keep
world positions. Decoded with nibabel, independently of the encoder."""

from __future__ import annotations

import base64
import gzip

import nibabel as nib
import numpy as np
import pytest

from medseg_core import niivue as NV
from medseg_core.io import Volume, load_volume


def _decode(data: bytes):
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return img, np.asarray(img.dataobj)


def _source_lps(tmp_path):
    """A source NIfTI stored LPS (x flipped, y flipped: not canonical) with one marked voxel."""
    arr = np.zeros((20, 30, 12), dtype=np.int16)  # (i, j, k) of the file
    arr[3, 25, 7] = 900  # the marked voxel
    arr[15, 4, 2] = 500  # a second one, elsewhere
    affine = np.array([[-1.5, 0, 0, 40.0], [0, -0.8, 0, 25.0], [0, 0, 2.5, -60.0], [0, 0, 0, 1]])
    path = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path, affine


def test_marked_voxel_lands_at_the_source_files_world_coordinate(tmp_path):
    path, src_affine = _source_lps(tmp_path)
    # hand-computed: x = -1.5 * 3 + 40 = 35.5; y = -0.8 * 25 + 25 = 5.0; z = 2.5 * 7 - 60 = -42.5
    world = np.array([35.5, 5.0, -42.5])
    assert np.allclose(src_affine @ [3, 25, 7, 1], [*world, 1])
    vol = load_volume(path, modality="CT")
    assert vol.shape == (12, 30, 20)
    # in the canonical (Z, Y, X) array the voxel moved (x and y flipped) but keeps its world position
    z, y, x = np.argwhere(vol.array == 900)[0]
    assert (z, y, x) == (7, 30 - 1 - 25, 20 - 1 - 3)
    assert np.allclose(NV.world_of_voxel(vol.affine, (z, y, x)), world)
    img, data = _decode(NV.volume_nifti(vol, (400, 40)))
    assert data.shape == (20, 30, 12) and data.dtype == np.int16
    i, j, k = np.argwhere(data == 900)[0]
    assert np.allclose(img.affine @ [i, j, k, 1], [*world, 1])
    assert np.allclose(img.header.get_sform() @ [i, j, k, 1], [*world, 1])  # NiiVue reads the sform
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    i2, j2, k2 = np.argwhere(data == 500)[0]
    assert np.allclose(img.affine @ [i2, j2, k2, 1], src_affine @ [15, 4, 2, 1])


def test_overlay_voxel_in_its_label_colour_at_the_same_world_point(tmp_path):
    path, src_affine = _source_lps(tmp_path)
    vol = load_volume(path, modality="CT")
    mask = vol.array == 900
    other = np.zeros_like(mask)
    other[0, 0, 0] = other[7, 4, 16] = True  # (7, 4, 16): the canonical index of the marked voxel
    img, data = _decode(NV.overlay_nifti([(mask, (230, 159, 0)), (other, (86, 180, 233))], vol))
    assert int(img.header["datatype"]) == 2304  # NIfTI RGBA32, which NiiVue draws with its own colours
    assert data.shape == (20, 30, 12)
    hit = np.argwhere(data["A"] > 0)
    assert len(hit) == 2  # the two distinct voxels; everything else transparent
    assert data["A"].sum() == 2 * 255
    i, j, k = np.argwhere(data["R"] == 86)[-1]  # the later layer is on top (as render.overlay)
    assert np.allclose(img.affine @ [i, j, k, 1], src_affine @ [3, 25, 7, 1])
    assert tuple(int(data[c][i, j, k]) for c in "RGBA") == (86, 180, 233, 255)
    # the (0, 0, 0) voxel of the canonical grid is the file's (19, 29, 0):
    # world (-1.5 * 19 + 40, -0.8 * 29 + 25, -60) = (11.5, 1.8, -60)
    i0, j0, k0 = [p for p in hit.tolist() if p != [i, j, k]][0]
    assert np.allclose(img.affine @ [i0, j0, k0, 1], [11.5, 1.8, -60.0, 1])


def test_window_goes_into_cal_min_cal_max_and_types():
    vol = Volume(
        np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) * 10 - 100,
        (2.0, 1.0, 1.0),
        np.diag([1.0, 1, 2, 1]),
        modality="CT",
    )
    img, data = _decode(NV.volume_nifti(vol, (400, 40)))
    assert (float(img.header["cal_min"]), float(img.header["cal_max"])) == (-160.0, 240.0)
    assert data.dtype == np.int16 and data[3, 2, 1] == vol.array[1, 2, 3]
    img, _ = _decode(NV.volume_nifti(vol))
    assert float(img.header["cal_min"]) == 0.0 and float(img.header["cal_max"]) == 0.0  # unset: NiiVue's own range
    frac = Volume(vol.array / 7.0, vol.spacing, vol.affine, modality="MR")
    _, data = _decode(NV.volume_nifti(frac, (1, 0), compress=False))
    assert data.dtype == np.float32 and data[3, 2, 1] == pytest.approx(vol.array[1, 2, 3] / 7.0)


def test_reduced_grid_keeps_each_sent_voxel_at_its_world_position():
    affine = np.array([[0.7, 0, 0, -90.0], [0, 0.7, 0, -80.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])
    arr = np.zeros((10, 40, 40), dtype=np.float32)
    arr[4, 22, 30] = 1000
    vol = Volume(arr, (3.0, 0.7, 0.7), affine, modality="CT")
    grid = NV.sent_grid(vol.shape, vol.affine, max_voxels=10 * 20 * 20)
    assert grid.stride == (1, 2, 2) and grid.reduced
    img, data = _decode(NV.volume_nifti(vol, max_voxels=10 * 20 * 20))
    assert data.shape == (20, 20, 10)
    i, j, k = np.argwhere(data == 1000)[0]
    assert (i, j, k) == (15, 11, 4)
    assert np.allclose(img.affine @ [i, j, k, 1], affine @ [30, 22, 4, 1])  # (-69, -64.6, 22)
    assert np.allclose(img.affine @ [i, j, k, 1], [-69.0, -64.6, 22.0, 1])
    # through-plane too once in-plane striding alone is not enough
    assert NV.sent_grid((300, 512, 512), np.eye(4)).stride == (1, 2, 2)
    assert NV.sent_grid((10, 40, 40), np.eye(4), max_voxels=1000).stride[0] > 1
    assert NV.sent_grid((64, 128, 128), np.eye(4)).reduced is False


def test_label_lut_and_data_url():
    lut = NV.label_lut(["spleen", "liver"], [(230, 159, 0), (86, 180, 233)])
    assert lut["R"] == [0, 230, 86] and lut["G"] == [0, 159, 180] and lut["B"] == [0, 0, 233]
    assert lut["A"] == [0, 255, 255] and lut["I"] == [0, 1, 2] and lut["labels"][1:] == ["spleen", "liver"]
    with pytest.raises(ValueError):
        NV.label_lut(["a"], [])
    vol = Volume(np.zeros((2, 3, 4), np.float32), (1, 1, 1), np.eye(4))
    m = np.zeros((2, 3, 4), np.uint8)
    m[1, 2, 3] = 2
    b = NV.label_nifti(m, vol)
    url = NV.data_url(b)
    assert url.startswith("data:application/gzip;base64,")
    img, data = _decode(base64.b64decode(url.split(",", 1)[1]))
    assert int(img.header["intent_code"]) == NV.INTENT_LABEL and data[3, 2, 1] == 2 and data.sum() == 2
