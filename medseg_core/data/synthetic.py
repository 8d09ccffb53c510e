"""Deterministic synthetic phantoms that behave like the reports' modalities.

Every generator takes a ``seed`` (the same seed gives the same case, bit for bit) and returns a
:class:`SyntheticCase`: a :class:`~medseg_core.io.Volume` in the project's canonical (Z, Y, X)
RAS+ orientation, its masks (uint8, same shape) and a metadata dict. Each case takes well under a
second on one CPU core.

* :func:`pelvic_mri` -- T2 fat-suppressed pelvis: bladder, uterus, **two** ovaries with follicles,
  vessels, bowel, a cyst, bias field and Rician noise. As in UT-EndoMRI only **one** ovary is
  labelled (side random, recorded in ``meta["labelled_side"]``); the other is kept in
  ``masks["ovary_other"]`` for analysis. The two ovaries look alike, so a model cannot know which
  one the reference marks: side swaps and double-ovary predictions happen as in report 000.
* :func:`abdominal_ct` -- portal-venous abdomen in Hounsfield units; spleen labelled.
* :func:`ultrasound` -- transvaginal B-mode fan with Rayleigh speckle and a benign or malignant
  ovarian lesion; clinical variables follow report 001; optional burned-in annotations.
* :func:`microus_prostate` -- micro-ultrasound prostate with expert and non-expert masks that
  disagree near the bladder border (report 004).
* :func:`gi_mri` -- abdominal MRI slice with stomach, small and large bowel as three overlapping
  binary labels (report 002, UW-Madison).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..io.volume import Volume
from ._shapes import Grid, paint, smooth_field, stamp


@dataclass
class SyntheticCase:
    volume: Volume
    masks: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """The primary label (the one a model is trained on)."""
        return self.masks[self.meta["primary_label"]]


def _rician(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n1 = rng.normal(0, sigma, img.shape).astype(np.float32)
    n2 = rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.sqrt((img + n1) ** 2 + n2**2)


# ============================================================================ pelvic T2FS MRI
def pelvic_mri(
    seed: int = 0, shape: tuple[int, int, int] = (24, 256, 256), spacing: tuple[float, float, float] = (6.0, 0.7, 0.7)
) -> SyntheticCase:
    """Axial T2FS pelvic MRI phantom (MR arbitrary units, about 0..1000).

    Masks: ``ovary`` (the labelled one), ``ovary_other``, ``uterus``, ``bladder``.
    Meta: ``labelled_side`` ("left"/"right", anatomical), ``ovary_centers_mm``, ``seed``.
    """
    rng = np.random.default_rng(seed)
    g = Grid(shape, spacing)
    img: np.ndarray = np.zeros(shape, np.float32)
    fov_x = shape[2] * spacing[2] / 2
    fov_y = shape[1] * spacing[1] / 2
    zc = 0.0
    # body: fat-suppressed subcutaneous tissue is dark, pelvic soft tissue mid-grey
    bb, m = g.ellipsoid((zc, -5, 0), (400, fov_y * 0.92, fov_x * 0.97), soft=2.0)
    paint(img, bb, m, 0.16)
    bb, m = g.ellipsoid((zc, -5, 0), (400, fov_y * 0.80, fov_x * 0.86), soft=3.0)
    paint(img, bb, m, 0.33)
    # pelvic side walls: bone (dark, fat-suppressed marrow) and obturator muscles
    for side in (-1, 1):
        bb, m = g.ellipsoid((zc, -25, side * fov_x * 0.80), (400, 30, 12), soft=2.0)
        paint(img, bb, m, 0.08)
        bb, m = g.ellipsoid((zc, -20, side * fov_x * 0.66), (400, 28, 7), soft=2.0)
        paint(img, bb, m, 0.22)
    # rectum / sigmoid, posterior midline: dark wall, mixed content
    bb, m = g.ellipsoid((zc, -fov_y * 0.55, rng.uniform(-6, 6)), (400, 13, 15), soft=1.5)
    paint(img, bb, m, 0.20)
    bb, m = g.ellipsoid((zc, -fov_y * 0.55, 0), (400, 7, 9), soft=1.5)
    paint(img, bb, m, rng.uniform(0.3, 0.6))
    masks = {k: np.zeros(shape, np.uint8) for k in ("ovary", "ovary_other", "uterus", "bladder")}
    # bladder: anterior, inferior, very bright fluid
    bz = rng.uniform(-45, -20)
    bb, m = g.ellipsoid(
        (bz, fov_y * 0.38, rng.uniform(-5, 5)),
        (rng.uniform(30, 45), rng.uniform(20, 28), rng.uniform(30, 42)),
        soft=1.0,
    )
    paint(img, bb, m, 0.98)
    stamp(masks["bladder"], bb, m)
    # uterus: central, tilted, intermediate myometrium with bright endometrium
    ux = rng.uniform(-8, 8)
    uang = rng.uniform(-20, 20)
    bb, m = g.ellipsoid((10, 2, ux), (40, 22, 28), angle_deg=uang, soft=1.5)
    paint(img, bb, m, 0.46)
    stamp(masks["uterus"], bb, m)
    bb, m = g.ellipsoid((10, 2, ux), (30, 4, 16), angle_deg=uang, soft=1.0)
    paint(img, bb, m, 0.78)
    # iliac vessels (bright slow flow), running through all slices
    for side in (-1, 1):
        for dx, dy, r in ((0.70, -0.05, 4.5), (0.62, -0.20, 3.5)):
            bb, m = g.ellipsoid((zc, fov_y * dy, side * fov_x * dx), (400, r, r), soft=1.0)
            paint(img, bb, m, 0.74)
    # bowel loops: bright fluid-filled rings, random places (distractors)
    for _ in range(rng.integers(4, 8)):
        c = (rng.uniform(-60, 60), rng.uniform(-5, fov_y * 0.55), rng.uniform(-fov_x * 0.6, fov_x * 0.6))
        r = rng.uniform(6, 11)
        bb, m = g.ellipsoid(c, (r * 2.5, r, r * 1.2), soft=1.0)
        paint(img, bb, m, 0.18)
        bb, m = g.ellipsoid(c, (r * 2.2, r * 0.6, r * 0.75), soft=1.0)
        paint(img, bb, m, rng.uniform(0.55, 0.85))
    # ovaries: both alike (low contrast stroma + follicles); one labelled
    centers = {}
    sides = {"right": 1, "left": -1}  # RAS: +x is the patient's right
    labelled = "left" if rng.random() < 0.5 else "right"
    for name, sgn in sides.items():
        c = (rng.uniform(-8, 18), rng.uniform(-22, -4), sgn * rng.uniform(36, 48))
        radii = (rng.uniform(13, 18), rng.uniform(9, 13), rng.uniform(11, 16))
        ang = rng.uniform(-30, 30)
        bb, m = g.ellipsoid(c, radii, angle_deg=ang, soft=1.5)
        paint(img, bb, m, 0.41)
        stamp(masks["ovary" if name == labelled else "ovary_other"], bb, m)
        centers[name] = [float(v) for v in c]
        for _ in range(rng.integers(5, 10)):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            rr = rng.uniform(0.0, 0.7)
            fc = (c[0] + u[0] * radii[0] * rr, c[1] + u[1] * radii[1] * rr, c[2] + u[2] * radii[2] * rr)
            fr = rng.uniform(2.2, 5.0)  # antral follicles, 4-10 mm across
            fbb, fm = g.ellipsoid(fc, (max(fr, 4.5), fr, fr), soft=0.6)
            paint(img, fbb, fm * 0.95, rng.uniform(0.78, 0.95))
    # a bright cyst near one adnexa (a distractor that mimics a follicle-rich ovary)
    cs = 1 if rng.random() < 0.5 else -1
    cc = (rng.uniform(-30, 30), rng.uniform(-35, 10), cs * rng.uniform(20, 62))
    cr = rng.uniform(6, 13)
    bb, m = g.ellipsoid(cc, (cr, cr, cr), soft=1.0)
    # keep the cyst off the ovaries
    for k in ("ovary", "ovary_other"):
        m = m * (masks[k][bb] == 0)
    paint(img, bb, m, 0.95)
    img *= smooth_field(shape, rng, 0.18)
    img = _rician(img, 0.035, rng) * 1000.0
    vol = Volume(
        img.astype(np.float32),
        spacing,
        g.affine,
        modality="MR",
        name=f"synthetic pelvic T2FS #{seed}",
        meta={"synthetic": True, "phantom": "pelvic_mri"},
    )
    meta = {
        "seed": seed,
        "kind": "pelvic",
        "labelled_side": labelled,
        "ovary_centers_mm": centers,
        "primary_label": "ovary",
        "cyst_side": "right" if cs > 0 else "left",
    }
    return SyntheticCase(vol, masks, meta)


# ============================================================================ abdominal CT
def abdominal_ct(
    seed: int = 0, shape: tuple[int, int, int] = (64, 128, 128), spacing: tuple[float, float, float] = (2.5, 1.5, 1.5)
) -> SyntheticCase:
    """Portal-venous abdominal CT phantom in HU (air -1000, fat -100, liver ~100, spleen ~110).

    The spleen (patient left, posterior) varies in size and position. Masks: ``spleen``, ``liver``,
    ``kidneys``. Values are clipped to [-1024, 3071] as a real scanner stores them.
    """
    rng = np.random.default_rng(seed)
    g = Grid(shape, spacing)
    img = np.full(shape, -1000.0, np.float32)
    fx = shape[2] * spacing[2] / 2
    fy = shape[1] * spacing[1] / 2
    bx, by = fx * rng.uniform(0.86, 0.95), fy * rng.uniform(0.72, 0.82)
    bb, m = g.ellipsoid((0, 0, 0), (1000, by, bx), soft=1.5)
    paint(img, bb, m, -100.0)  # subcutaneous fat
    bb, m = g.ellipsoid((0, 0, 0), (1000, by - 9, bx - 9), soft=1.5)
    paint(img, bb, m, 35.0)  # muscle wall / soft tissue
    bb, m = g.ellipsoid((0, 2, 0), (1000, by - 15, bx - 15), soft=2.0)
    paint(img, bb, m, -60.0)  # intra-abdominal fat
    masks = {k: np.zeros(shape, np.uint8) for k in ("spleen", "liver", "kidneys")}
    zext = shape[0] * spacing[0] / 2
    # spine and paraspinal muscles (posterior midline)
    bb, m = g.ellipsoid((0, -by * 0.62, 0), (1000, 14, 14), soft=1.0)
    paint(img, bb, m, 700.0)
    bb, m = g.ellipsoid((0, -by * 0.62, 0), (1000, 10, 10), soft=1.0)
    paint(img, bb, m, 250.0)
    for s in (-1, 1):
        bb, m = g.ellipsoid((0, -by * 0.72, s * 22), (1000, 12, 14), soft=1.0)
        paint(img, bb, m, 50.0)
    # aorta (left of midline) and IVC
    bb, m = g.ellipsoid((0, -by * 0.38, -8), (1000, 9, 9), soft=0.8)
    paint(img, bb, m, 160.0)
    bb, m = g.ellipsoid((0, -by * 0.35, 14), (1000, 10, 8), soft=0.8)
    paint(img, bb, m, 120.0)
    # liver: patient right (+x), large
    lz = rng.uniform(0.1, 0.35) * zext
    bb, m = g.ellipsoid(
        (lz, rng.uniform(-5, 8), bx * 0.45), (zext * 0.6, by * 0.62, bx * 0.5), angle_deg=rng.uniform(-15, 15), soft=1.5
    )
    paint(img, bb, m, rng.uniform(95, 115))
    stamp(masks["liver"], bb, m)
    # kidneys: posterior, both sides, cortex brighter than medulla
    for s in (-1, 1):
        kc = (rng.uniform(-0.35, 0.0) * zext, -by * 0.42, s * bx * 0.42)
        bb, m = g.ellipsoid(kc, (28, 15, 11), angle_deg=s * 20, soft=1.0)
        paint(img, bb, m, 170.0)
        stamp(masks["kidneys"], bb, m)
        bb, m = g.ellipsoid(kc, (18, 8, 5), angle_deg=s * 20, soft=1.0)
        paint(img, bb, m, 90.0)
    # bowel: gas and fluid pockets anterior
    for _ in range(rng.integers(3, 7)):
        c = (rng.uniform(-0.6, 0.4) * zext, rng.uniform(0.1, 0.6) * by, rng.uniform(-0.5, 0.3) * bx)
        r = rng.uniform(6, 12)
        bb, m = g.ellipsoid(c, (r * 1.5, r, r), soft=1.0)
        paint(img, bb, m, 20.0)
        bb, m = g.ellipsoid(c, (r, r * 0.55, r * 0.55), soft=1.0)
        paint(img, bb, m, rng.choice([-900.0, 10.0]))
    # spleen: patient left (-x), posterior, size and position vary
    size = rng.uniform(0.8, 1.25)
    sc = (rng.uniform(0.0, 0.4) * zext, -by * rng.uniform(0.05, 0.3), -bx * rng.uniform(0.55, 0.7))
    bb, m = g.ellipsoid(sc, (36 * size, 27 * size, 15 * size), angle_deg=rng.uniform(20, 50), soft=1.2)
    paint(img, bb, m, rng.uniform(105, 125))
    stamp(masks["spleen"], bb, m)
    masks["liver"][masks["spleen"] > 0] = 0
    img += rng.normal(0, 12.0, shape).astype(np.float32)
    img = np.clip(np.rint(img), -1024, 3071).astype(np.float32)
    vol = Volume(
        img,
        spacing,
        g.affine,
        modality="CT",
        name=f"synthetic abdominal CT #{seed}",
        meta={"synthetic": True, "phantom": "abdominal_ct", "units": "HU"},
    )
    meta = {
        "seed": seed,
        "kind": "ct",
        "spleen_volume_ml": float(masks["spleen"].sum() * np.prod(spacing) / 1000),
        "primary_label": "spleen",
    }
    return SyntheticCase(vol, masks, meta)


# ============================================================================ ultrasound
ANNOTATION_TEXTS = ("Rt. Ovary", "Lt. Ovary", "LL Ovary", "Li Ov")
ANNOTATION_COLOURS = ((0, 255, 255), (255, 255, 0), (255, 255, 255))


def malignancy_probability(menopausal: int, oncology_center: int) -> float:
    """P(malignant | clinical variables) used by the phantom.

    Follows report 001: at non-oncology centres malignancy is much more likely after menopause;
    at oncology (referral) centres the prevalence is high and roughly independent of menopause.
    """
    if oncology_center:
        return 0.45
    return 0.40 if menopausal else 0.08


_FAN_HALF_ANGLE = np.deg2rad(55)  # the fan half-opening of a transvaginal probe


def _fan(h, w, apex_y=-0.12, half_angle=_FAN_HALF_ANGLE, r0=0.05, r1=1.02):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = yy / h - apex_y
    x = (xx - w / 2) / h
    r = np.sqrt(x**2 + y**2)
    th = np.arctan2(x, y)
    return (np.abs(th) <= half_angle) & (r >= r0 + 0.12) & (r <= r1), r, th


def ultrasound(
    seed: int = 0,
    shape: tuple[int, int] = (256, 336),
    malignant: bool | None = None,
    annotate: bool = False,
    clinical: dict | None = None,
) -> SyntheticCase:
    """Transvaginal B-mode phantom (grey 0..255, 2D, 1 x H x W) with one ovarian lesion.

    Benign: unilocular, smooth, anechoic. Malignant: irregular thick wall, echogenic solid part,
    papillary projections, thick septa. Clinical variables ``menopausal`` and ``oncology_center``
    (0/1) are drawn first and malignancy from :func:`malignancy_probability` (unless given).
    With ``annotate``, burned-in text and caliper marks (cyan, yellow or white) are drawn inside
    the fan; ``meta["annotated_rgb"]`` holds the annotated RGB picture, ``meta["clean"]`` the
    clean grey one, and the Volume holds the annotated picture in grey (what a user uploads).
    Masks: ``lesion``. Pixel spacing 0.2 mm.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    if clinical is None:
        clinical = {"menopausal": int(rng.random() < 0.45), "oncology_center": int(rng.random() < 0.5)}
    if malignant is None:
        malignant = bool(rng.random() < malignancy_probability(clinical["menopausal"], clinical["oncology_center"]))
    fan, r, th = _fan(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # tissue echogenicity with depth attenuation and some texture
    tissue = 0.45 + 0.15 * np.sin(xx / rng.uniform(9, 15) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(11, 19))
    tissue *= np.exp(-1.1 * np.clip(r, 0, None))
    mask = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(0.45, 0.65) * h, w / 2 + rng.uniform(-0.15, 0.15) * w
    ry, rx = rng.uniform(0.14, 0.22) * h, rng.uniform(0.14, 0.24) * w
    ang = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    ay = dy * np.cos(ang) + dx * np.sin(ang)
    ax = -dy * np.sin(ang) + dx * np.cos(ang)
    phi = np.arctan2(ay, ax)
    if malignant:
        wobble = 1 + 0.12 * np.sin(3 * phi + rng.uniform(0, 6)) + 0.08 * np.sin(7 * phi + rng.uniform(0, 6))
    else:
        wobble = 1 + 0.02 * np.sin(2 * phi + rng.uniform(0, 6))
    d = np.sqrt((ay / ry) ** 2 + (ax / rx) ** 2) / wobble
    inside = d <= 1.0
    mask[inside & fan] = 1
    echo = tissue.copy()
    wall = (d > 1.0) & (d < (1.22 if malignant else 1.07))
    echo[wall] = 0.85 if malignant else 0.7
    echo[inside] = 0.04  # anechoic fluid
    # posterior acoustic enhancement below the cyst
    below = (xx > cx - rx) & (xx < cx + rx) & (yy > cy) & ~inside
    echo[below] *= 1.25
    if malignant:
        # solid echogenic component + papillary projections + thick septa
        sa = rng.uniform(0, 2 * np.pi)
        sy_, sx_ = cy + 0.45 * ry * np.sin(sa), cx + 0.45 * rx * np.cos(sa)
        solid = ((yy - sy_) / (0.5 * ry)) ** 2 + ((xx - sx_) / (0.45 * rx)) ** 2 <= 1
        echo[solid & inside] = 0.65 + 0.1 * rng.random()
        for _ in range(rng.integers(2, 5)):
            pa = rng.uniform(0, 2 * np.pi)
            py, px = cy + 0.85 * ry * np.sin(pa), cx + 0.85 * rx * np.cos(pa)
            pr = rng.uniform(0.08, 0.16) * min(ry, rx)
            papilla = (yy - py) ** 2 + (xx - px) ** 2 <= pr**2
            echo[papilla & inside] = 0.75
        for _ in range(rng.integers(1, 3)):
            sang = rng.uniform(0, np.pi)
            dist = np.abs((yy - cy) * np.cos(sang) - (xx - cx) * np.sin(sang))
            echo[(dist < rng.uniform(2.5, 4.5)) & inside] = 0.7
    else:
        # occasionally a thin smooth septum-free cyst with faint internal echoes
        echo[inside] += 0.03 * rng.random()
    # Rayleigh-like multiplicative speckle, then log-ish compression
    speckle = rng.rayleigh(scale=1.0 / np.sqrt(np.pi / 2), size=(h, w)).astype(np.float32)
    img = echo * speckle
    img = np.clip(img, 0, None) ** 0.8
    img = np.where(fan, img, 0.0)
    clean = np.clip(img * 255.0 / max(float(np.percentile(img[fan], 99.5)), 1e-6), 0, 255).astype(np.uint8)
    rgb = np.repeat(clean[..., None], 3, axis=2)
    annotations = None
    if annotate:
        rgb, annotations = _annotate(rgb, mask, fan, rng)
    grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    vol = _image_volume(grey.astype(np.float32), (0.2, 0.2), "US", f"synthetic ultrasound #{seed}")
    vol.meta.update({"synthetic": True, "phantom": "ultrasound"})
    meta = {
        "seed": seed,
        "kind": "us",
        "malignant": int(malignant),
        "clinical": dict(clinical),
        "primary_label": "lesion",
        "clean": _image_to_canonical(clean.astype(np.float32)),
        "annotated_rgb": rgb if annotate else None,
        "annotations": annotations,
    }
    return SyntheticCase(vol, {"lesion": _image_to_canonical(mask)}, meta)


def _annotate(rgb: np.ndarray, mask: np.ndarray, fan: np.ndarray, rng):
    """Burn in a label text and caliper marks ("+" at each end, dotted line between)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb)
    dr = ImageDraw.Draw(im)
    colour = ANNOTATION_COLOURS[rng.integers(len(ANNOTATION_COLOURS))]
    text = ANNOTATION_TEXTS[rng.integers(len(ANNOTATION_TEXTS))]
    h, w = mask.shape
    try:
        font = ImageFont.load_default(size=int(rng.integers(12, 18)))
    except TypeError:  # older Pillow
        font = ImageFont.load_default()
    ys, xs = np.nonzero(fan)
    ty = int(rng.uniform(0.25, 0.35) * h)
    tx = int(w / 2 + rng.uniform(-0.25, 0.05) * w)
    dr.text((tx, ty), text, fill=colour, font=font)
    ys, xs = np.nonzero(mask)
    if len(ys):
        i, j = rng.integers(len(ys), size=2)
        p0 = (int(xs.min()), int(ys[i]))
        p1 = (int(xs.max()), int(ys[j]))
        for px, py in (p0, p1):
            dr.line([(px - 4, py), (px + 4, py)], fill=colour, width=1)
            dr.line([(px, py - 4), (px, py + 4)], fill=colour, width=1)
        n = 12
        for k in range(1, n, 2):
            a = k / n
            b = (k + 0.5) / n
            dr.line(
                [
                    (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1])),
                    (p0[0] + b * (p1[0] - p0[0]), p0[1] + b * (p1[1] - p0[1])),
                ],
                fill=colour,
                width=1,
            )
    out = np.asarray(im)
    return out, {"text": text, "colour": list(colour)}


def _image_to_canonical(pic2d: np.ndarray) -> np.ndarray:
    """A picture as seen on screen -> canonical (1, Y, X) (the inverse of axial display)."""
    return np.ascontiguousarray(pic2d[::-1, ::-1][None])


def _image_volume(pic2d: np.ndarray, spacing_rc, modality: str, name: str) -> Volume:
    """A 2D picture as a Volume laid out exactly as :func:`medseg_core.io.load_volume` would."""
    rs, cs = spacing_rc
    h, w = pic2d.shape
    # image files are read as LPS-like display slices; canonical RAS flips both in-plane axes
    aff = np.diag([cs, rs, 1.0, 1.0])
    aff[:3, 3] = [-(w - 1) * cs, -(h - 1) * rs, 0.0]
    return Volume(_image_to_canonical(pic2d), (1.0, rs, cs), aff, modality=modality, name=name)


# ============================================================================ micro-ultrasound prostate
def microus_prostate(seed: int = 0, shape: tuple[int, int] = (224, 224)) -> SyntheticCase:
    """Micro-ultrasound prostate slice (grey 0..254, 2D) with expert and non-expert masks.

    The prostate is a hypo-echoic ellipse with a brighter capsule; the bladder (anechoic) sits above
    it. The non-expert mask follows the expert one except near the bladder border at the midline,
    where it bulges into the bladder neck or stops short of it (the hard region of report 004).
    Masks: ``expert``, ``non_expert``. Pixel spacing 0.033586 mm (report 004's public code).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.55, 0.65) * h, rng.uniform(0.45, 0.55) * w
    ry, rx = rng.uniform(0.22, 0.3) * h, rng.uniform(0.28, 0.36) * w
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    expert = (d <= 1).astype(np.uint8)
    echo = np.full((h, w), 0.55, np.float32) + 0.08 * np.sin(xx / 7.0 + rng.uniform(0, 6))
    echo[d <= 1] = 0.32
    echo[(d > 0.95) & (d < 1.08)] = 0.7  # capsule
    # bladder above the gland
    by_ = cy - ry - rng.uniform(0.05, 0.12) * h
    bd = np.sqrt(((yy - by_) / (0.16 * h)) ** 2 + ((xx - cx) / (0.3 * w)) ** 2)
    echo[bd <= 1] = 0.05
    # non-expert disagreement near the bladder border at the midline
    bump = np.exp(-(((xx - cx) / (0.12 * w)) ** 2)) * np.exp(-(((yy - (cy - ry)) / (0.06 * h)) ** 2))
    direction = 1 if rng.random() < 0.5 else -1
    non_expert = (d - direction * 0.35 * bump <= 1).astype(np.uint8)
    speckle = rng.rayleigh(scale=1.0 / np.sqrt(np.pi / 2), size=(h, w)).astype(np.float32)
    img = np.clip(echo * speckle * 180.0, 0, 254)
    vol = _image_volume(img.astype(np.float32), (0.033586, 0.033586), "US", f"synthetic micro-US prostate #{seed}")
    vol.meta.update({"synthetic": True, "phantom": "microus_prostate"})
    masks = {"expert": _image_to_canonical(expert), "non_expert": _image_to_canonical(non_expert)}
    meta = {
        "seed": seed,
        "kind": "microus",
        "primary_label": "expert",
        "disagreement_pixels": int((expert != non_expert).sum()),
    }
    return SyntheticCase(vol, masks, meta)


# ============================================================================ GI-tract MRI
GI_LABELS = ("large_bowel", "small_bowel", "stomach")


def gi_mri(seed: int = 0, shape: tuple[int, int] = (266, 266)) -> SyntheticCase:
    """Axial abdominal MRI slice (16-bit range) with three overlapping binary labels.

    ``stomach`` (patient left, upper), ``small_bowel`` (central loops), ``large_bowel`` (a frame:
    ascending colon on the patient's right, descending on the left, transverse anteriorly). As in
    UW-Madison, small- and large-bowel annotations overlap on a few pixels. Pixel spacing 1.5 mm.
    Masks are stored per label in display layout order: ``large_bowel``, ``small_bowel``, ``stomach``.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # screen layout (radiological): image left = patient right, top = anterior
    body = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.46 * w)) ** 2 <= 1
    img = np.where(body, 0.35, 0.0).astype(np.float32)
    img += body * 0.05 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    labs = {k: np.zeros((h, w), np.uint8) for k in GI_LABELS}

    def blob(cy, cx, ry, rx, val, key=None, ang=0.0):
        dy, dx = yy - cy, xx - cx
        a = dy * np.cos(ang) + dx * np.sin(ang)
        b = -dy * np.sin(ang) + dx * np.cos(ang)
        m = (a / ry) ** 2 + (b / rx) ** 2 <= 1
        img[m] = val
        if key:
            labs[key][m] = 1
        return m

    present = {"stomach": rng.random() < 0.7, "small_bowel": rng.random() < 0.85, "large_bowel": rng.random() < 0.9}
    if present["large_bowel"]:
        for cy, cx, ry, rx in (
            (0.55 * h, 0.2 * w, 0.1 * h, 0.06 * w),
            (0.55 * h, 0.8 * w, 0.1 * h, 0.06 * w),
            (0.28 * h, 0.5 * w, 0.05 * h, 0.22 * w),
        ):
            if rng.random() < 0.85:
                blob(cy + rng.uniform(-5, 5), cx + rng.uniform(-5, 5), ry, rx, rng.uniform(0.15, 0.3), "large_bowel")
    if present["stomach"]:
        blob(
            0.32 * h + rng.uniform(-8, 8),
            0.7 * w + rng.uniform(-8, 8),
            rng.uniform(0.08, 0.13) * h,
            rng.uniform(0.1, 0.15) * w,
            rng.uniform(0.75, 0.95),
            "stomach",
            ang=rng.uniform(-0.5, 0.5),
        )
    if present["small_bowel"]:
        for _ in range(rng.integers(4, 9)):
            cy, cx = rng.uniform(0.4, 0.7) * h, rng.uniform(0.3, 0.7) * w
            blob(
                cy,
                cx,
                rng.uniform(6, 12),
                rng.uniform(6, 12),
                rng.uniform(0.55, 0.8),
                "small_bowel",
                ang=rng.uniform(0, 3),
            )
        if present["large_bowel"] and labs["large_bowel"].any():
            # deliberate overlap: a loop touching the colon is annotated as both
            ys, xs = np.nonzero(labs["large_bowel"])
            i = rng.integers(len(ys))
            m = blob(ys[i], xs[i], 5, 5, 0.6, "small_bowel")
            labs["large_bowel"][m] = 1
    img = _rician(img, 0.03, rng)
    img = np.clip(img * 12000.0, 0, 65535)
    vol = _image_volume(img.astype(np.float32), (1.5, 1.5), "MR", f"synthetic GI MRI #{seed}")
    vol.meta.update({"synthetic": True, "phantom": "gi_mri"})
    masks = {k: _image_to_canonical(v) for k, v in labs.items()}
    meta = {
        "seed": seed,
        "kind": "gi",
        "primary_label": "stomach",
        "labels": list(GI_LABELS),
        "overlap_pixels": int((labs["small_bowel"] & labs["large_bowel"]).sum()),
    }
    return SyntheticCase(vol, masks, meta)


GENERATORS: dict[str, Callable[..., SyntheticCase]] = {
    "pelvic": pelvic_mri,
    "ct": abdominal_ct,
    "us": ultrasound,
    "microus": microus_prostate,
    "gi": gi_mri,
}
