"""The synthetic RAF-CE stand-in: procedural faces in the RAF-CE on-disk format.

Model of the data
-----------------
- Labels: exactly the per-partition class counts of the real release (2709 / 909 / 931,
  582 down to 6 images per class, ``resources/rafce_label_stats.json``), shuffled over keys
  ``0001.jpg``... with gaps, as in the real files.
- AUs: each image's class fixes only a distribution over the 18 AUs, never the AUs
  themselves. Per class, an image is AU-less ("null") with a small probability; otherwise it
  follows one of two class sub-prototypes (think "more happy" / "more surprised") whose AU
  probabilities sit symmetrically around the class frequency, so every AU's marginal equals
  the real training frequency while AUs co-occur within a prototype. The sub-prototypes are
  fixed (``STRUCTURE_SEED``), the draws depend on the data seed. Classes with overlapping AU
  frequencies (e.g. Sadly angry vs Angrily disgusted) therefore stay hard to tell apart, as in
  the real data: a classifier that sees the true binary AUs reaches only about real-model level.
- Intensity: every present AU gets a random intensity in [0.2, 1]; AUs typical of the class
  are on average stronger, the one image cue beyond the binary AUs.
- Faces: signed-distance shapes rendered on a pixel grid, vectorised over batches of faces.
  Brows (AU1 inner / AU2 outer raise, AU4 lower + pull together with frown lines), lids
  (AU5 raise, AU7 tighten, AU6 cheek raise pushes the lower lid up), cheeks (AU6), nose
  (AU9 wrinkle lines and nostril lift, AU10 upper lip raise with nasolabial folds), lips
  (AU12 smile, AU15 corners down, AU16 lower lip down, AU17 chin raise, AU20 stretch, AU22
  funnel, AU24 press, AU25 part, AU26 jaw drop, AU27 mouth stretch) and the jaw line move.
- Nuisance: identity (face shape, skin, hair, iris colour, feature spacing, resting brow and
  mouth shape), pose (rotation, translation, scale, yaw as horizontal squash plus feature
  shift), lighting (brightness and gradient), pixel noise and JPEG quality.
- The AU label file carries the real quirks at about the real rates: ``null`` for AU-less
  images, ~5 % side-prefixed tokens (``L12``, ``r4``), a few out-of-vocabulary AUs, some
  repeated tokens and a handful of malformed tokens (appended, so the parsed targets equal the
  rendered AUs).

Everything is deterministic given ``seed``: same seed, same bytes.
"""

from __future__ import annotations

import io
import json
import os
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from PIL import Image

from fer_core.data.dataset import AU_INDEX, AU_VOCAB, RAFCE_STATS
from fer_core.data.rafce import AU_FILE, EMO_FILE, PARTITION_FILE
from fer_core.errors import ConfigError

SYNTH_VERSION = 2  # bump when the generator's output changes (cached stand-ins are regenerated)
STRUCTURE_SEED = 20240607  # the class sub-prototypes: the same "world" for every data seed
MAX_KEY = 4908  # real keys run 0001..4908 with gaps
NUM_CLASSES = len(RAFCE_STATS["classes"])
PROTOTYPE_SPREAD = 1.0  # 0: independent AUs; 1: sub-prototypes as far apart as the marginals allow
MAX_NULL_RATE = 0.05  # real release: 251 / 4549 images have no AU
OOV_AUS = (3, 8, 11, 13, 14, 18, 19, 21, 23, 28, 29, 38, 39, 43)  # 18 + 14 = 32 distinct numbers
MALFORMED = ("AD19", "BL18", "RB18", "L12L", "4+")  # "4+" yields an empty (malformed) token
BATCH = 128


def au_frequencies() -> np.ndarray:
    """(14, 18) per-class training AU frequencies of the real release."""
    f = RAFCE_STATS["train_au_frequency"]
    return np.array([[f[str(c)][str(a)] for a in AU_VOCAB] for c in range(NUM_CLASSES)], dtype=np.float64)


def au_model() -> tuple[np.ndarray, np.ndarray]:
    """Null rate per class (14,) and sub-prototype AU probabilities (14, 2, 18) given non-null.

    Marginal: null_rate * 0 + (1 - null_rate) * mean_k(proto[k]) = the real frequency.
    """
    p = au_frequencies()
    null_rate = np.minimum(MAX_NULL_RATE, 0.5 * (1.0 - p.max(axis=1)))
    r = p / (1.0 - null_rate[:, None])
    delta = PROTOTYPE_SPREAD * np.minimum(r, 1.0 - r)
    signs = np.random.default_rng(STRUCTURE_SEED).choice([-1.0, 1.0], size=p.shape)
    proto = np.stack([r + signs * delta, r - signs * delta], axis=1)
    return null_rate, np.clip(proto, 0.0, 1.0)


def sample_labels(rng: np.random.Generator) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keys with gaps plus labels and partitions with exactly the real per-partition counts."""
    labels, parts = [], []
    for part, counts in sorted(RAFCE_STATS["partition_counts"].items()):
        for c, n in enumerate(counts):
            labels += [c] * n
            parts += [int(part)] * n
    n = len(labels)
    order = rng.permutation(n)
    numbers = np.sort(rng.choice(np.arange(1, MAX_KEY + 1), size=n, replace=False))
    keys = [f"{k:04d}.jpg" for k in numbers]
    return keys, np.asarray(labels, dtype=np.int64)[order], np.asarray(parts, dtype=np.int8)[order]


def sample_aus(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary AUs (N,18) and intensities in [0.2,1] for present AUs (N,18), given the classes."""
    null_rate, proto = au_model()
    n = len(labels)
    is_null = rng.random(n) < null_rate[labels]
    k = rng.integers(0, 2, size=n)
    present = (rng.random((n, len(AU_VOCAB))) < proto[labels, k]) & ~is_null[:, None]
    # class-typical AUs are expressed more strongly: intensity carries class evidence beyond the
    # binary labels, as in real compound expressions (calibrated so a from-scratch CNN lands near
    # the real plain-ResNet baseline's accuracy; see the module docstring)
    mean = 0.3 + 0.7 * au_frequencies()[labels]
    inten = np.clip(mean + rng.normal(0.0, 0.12, size=present.shape), 0.2, 1.0)
    return present, np.where(present, inten, 0.0).astype(np.float32)


def au_label_text(rng: np.random.Generator, present: np.ndarray) -> list[str]:
    """RAF-CE AU label strings with the real quirks (side prefixes, OOV, repeats, malformed)."""
    lines = []
    for row in present:
        aus = [AU_VOCAB[i] for i in np.flatnonzero(row)]
        if not aus:
            lines.append("null")
            continue
        if rng.random() < 0.04:
            aus = sorted([*aus, int(rng.choice(OOV_AUS))])
        toks = []
        for au in aus:
            tok = str(au)
            if rng.random() < 0.05:
                side = str(rng.choice(list("LLLRRRBT")))
                tok = (side.lower() if rng.random() < 0.1 else side) + tok
            toks.append(tok)
        if rng.random() < 0.006:
            toks.append(toks[int(rng.integers(len(toks)))])
        lines.append("+".join(toks))
    # a handful of malformed tokens (appended: the parsed targets still equal the rendered AUs)
    nonnull = [i for i, t in enumerate(lines) if t != "null"]
    for j, i in enumerate(rng.choice(nonnull, size=min(len(MALFORMED) + 1, len(nonnull)), replace=False)):
        lines[i] += "+" + (MALFORMED[j] if j < len(MALFORMED) else "t23")  # t23: lower-case T side prefix
    return lines


def sample_nuisance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Identity, pose, lighting and noise parameters, one row per face (all float32 (n,) or (n,3))."""
    u = rng.uniform

    def mix(a: tuple[float, ...], b: tuple[float, ...], t: np.ndarray) -> np.ndarray:
        return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * t[:, None]

    skin = mix((0.96, 0.80, 0.69), (0.42, 0.28, 0.20), u(0, 1, n)) * u(0.94, 1.06, (n, 3))
    hair = mix((0.08, 0.06, 0.05), (0.78, 0.62, 0.38), rng.beta(1.2, 3.0, n))
    iris = mix((0.25, 0.15, 0.08), (0.25, 0.40, 0.55), (u(0, 1, n) < 0.3).astype(float))
    p = {
        "rot": np.clip(rng.normal(0, 0.07, n), -0.2, 0.2), "tx": np.clip(rng.normal(0, 0.04, n), -0.1, 0.1),
        "ty": np.clip(rng.normal(0.0, 0.04, n), -0.1, 0.1), "scale": u(0.95, 1.08, n), "yaw": u(-0.35, 0.35, n),
        "fa": u(0.62, 0.74, n), "fb": u(0.80, 0.90, n), "ex": u(0.25, 0.32, n), "ey": u(-0.17, -0.08, n),
        "ew": u(0.13, 0.16, n), "eh": u(0.05, 0.064, n), "bgap": u(0.085, 0.12, n), "arch": u(0.01, 0.035, n),
        "bth": u(0.03, 0.048, n), "ndist": u(0.25, 0.31, n), "nw": u(0.055, 0.08, n), "mdist": u(0.16, 0.21, n),
        "mw": u(0.2, 0.25, n), "lt": u(0.03, 0.045, n), "curve": rng.normal(0, 0.008, n),
        "gaze": rng.normal(0, 0.02, n), "bright": u(0.75, 1.12, n), "gx": u(-0.25, 0.25, n),
        "gy": u(-0.15, 0.15, n), "noise": u(0.006, 0.025, n), "quality": rng.integers(60, 96, n).astype(float),
    }
    out = {k: v.astype(np.float32) for k, v in p.items()}
    out.update(skin=skin.astype(np.float32), hair=hair.astype(np.float32), iris=iris.astype(np.float32),
               bg=u(0.15, 0.9, (n, 3)).astype(np.float32))
    return out


def _render_batch(p: dict[str, np.ndarray], a: np.ndarray, size: int, noise_seed: int) -> np.ndarray:
    """Render one batch: parameters (B,) / (B,3), AU intensities (B,18) -> uint8 (B,H,W,3)."""
    b = a.shape[0]
    f32 = np.float32

    def col(name: str) -> np.ndarray:
        return p[name].reshape(b, 1, 1)

    def au(n: int) -> np.ndarray:
        return a[:, AU_INDEX[n]].reshape(b, 1, 1)

    g = ((np.arange(size, dtype=f32) + 0.5) / size * 2 - 1)
    x, y = g[None, None, :], g[None, :, None]
    # inverse pose: image coords -> face coords (u right, v down); yaw squashes horizontally
    c, s = np.cos(col("rot")), np.sin(col("rot"))
    sc, yaw = col("scale"), col("yaw")
    sx = 1 - 0.22 * np.abs(yaw)
    xx, yy = x - col("tx"), y - col("ty")
    uu = (c * xx + s * yy) / (sc * sx)
    vv = (-s * xx + c * yy) / sc
    ipx = f32(size / 2) * sc  # 1 / pixel size in face units: soft, anti-aliased edges

    def cov(d: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - d * ipx, 0, 1)

    img = np.empty((b, 3, size, size), dtype=f32)
    bg = p["bg"].reshape(b, 3, 1, 1)
    img[:] = bg * (1 + 0.25 * y[:, None])

    def paint(alpha: np.ndarray, color: np.ndarray) -> None:
        img[:] += alpha[:, None] * (color.reshape(b, 3, 1, 1) - img)

    def ellipse(cu, cv, ea, eb) -> np.ndarray:
        return (np.sqrt(((uu - cu) / ea) ** 2 + ((vv - cv) / eb) ** 2) - 1) * np.minimum(ea, eb)

    def segment(u0, v0, u1, v1, width) -> np.ndarray:
        du, dv = u1 - u0, v1 - v0
        t = np.clip(((uu - u0) * du + (vv - v0) * dv) / (du * du + dv * dv + 1e-6), 0, 1)
        return np.sqrt((uu - u0 - t * du) ** 2 + (vv - v0 - t * dv) ** 2) - width

    skin, hair = p["skin"], p["hair"]
    fa, fb = col("fa"), col("fb")
    jaw = 0.06 * au(26) + 0.11 * au(27) - 0.02 * au(17)
    shift = 0.12 * yaw  # internal features drift toward the side the face turns to
    # hair behind the head, neck, then the face (lower half stretches with the jaw)
    paint(cov(ellipse(0, -0.3, fa * 1.12, fb * 0.8)), hair)
    paint(cov(np.maximum(np.abs(uu) - fa * 0.5, 0.5 - vv)), skin * 0.82)
    fb_v = np.where(vv > 0.05, fb * (1 + jaw), fb)
    paint(cov(ellipse(0, 0.05, fa, fb_v)), skin)

    ey, ex, ew, eh = col("ey"), col("ex"), col("ew"), col("eh")
    ny = ey + col("ndist")
    my = ny + col("mdist")
    # cheeks: shaded blobs that rise and deepen with AU6 (and a little with AU12)
    cheek_v = ey + 0.2 - 0.05 * au(6) - 0.025 * au(12)
    cheek_a = 0.12 + 0.4 * au(6) + 0.1 * au(12)
    for sgn in (-1.0, 1.0):
        paint(cov(ellipse(sgn * (ex + 0.03) + shift, cheek_v, 0.1, 0.065)) * cheek_a, skin * (0.92, 0.7, 0.68))

    # eyes: upper lid opens with AU5, both lids close with AU7, lower lid pushed up by AU6
    ht = eh * (1 + 0.9 * au(5) - 0.4 * au(7) - 0.2 * au(4) - 0.15 * au(6))
    hb = eh * (0.8 + 0.2 * au(5) - 0.45 * au(7) - 0.45 * au(6))
    for sgn in (-1.0, 1.0):
        cu = sgn * ex + shift
        du = uu - cu
        arc = np.sqrt(np.clip(1 - (du / ew) ** 2, 0, 1))
        d_eye = np.maximum(np.maximum(ey - ht * arc - vv, vv - ey - hb * arc), np.abs(du) - ew)
        paint(cov(d_eye - 0.012), skin * 0.55)  # lid line / lashes
        white = cov(d_eye)
        paint(white, np.full((b, 3), 0.92, dtype=f32))
        iris = cov(np.sqrt((du - col("gaze")) ** 2 + (vv - ey) ** 2) - eh * 1.05) * white
        paint(iris, p["iris"])
        paint(cov(np.sqrt((du - col("gaze")) ** 2 + (vv - ey) ** 2) - eh * 0.45) * white,
              np.full((b, 3), 0.05, dtype=f32))

    # brows: t runs from the inner (0) to the outer (1) end
    brow_col = hair * 0.6
    inner = ex - ew * 0.95 - 0.04 * au(4)
    length = ew * 2.1
    for sgn in (-1.0, 1.0):
        t = (sgn * (uu - shift) - inner) / length
        tc = np.clip(t, 0, 1)
        yb = (ey - col("bgap") - col("arch") * 4 * tc * (1 - tc) - 0.085 * au(1) * (1 - tc) ** 1.5
              - 0.075 * au(2) * tc + 0.06 * au(4) * (1 - 0.6 * tc))
        d = np.maximum(np.abs(vv - yb) - col("bth") * (1 - 0.4 * tc) / 2, (np.abs(t - 0.5) - 0.5) * length)
        paint(cov(d), brow_col)
    frown = 0.6 * au(4)
    for sgn in (-1.0, 1.0):
        top = ey - col("bgap") - 0.04
        paint(cov(segment(sgn * 0.035 + shift, top, sgn * 0.025 + shift, top + 0.08, 0.006)) * frown, skin * 0.6)
    forehead = 0.55 * np.maximum(au(1), au(2))
    for k in (0.16, 0.24):
        v0 = ey - col("bgap") - k
        paint(cov(segment(-0.22 + shift, v0, 0.22 + shift, v0, 0.005)) * forehead, skin * 0.7)

    # nose: tip and nostrils lift with AU9 (and a bit with AU10); AU9 adds wrinkles on the bridge
    nshift = 1.6 * shift
    lift = 0.03 * au(9) + 0.015 * au(10)
    nw = col("nw") * (1 + 0.25 * au(9))
    paint(cov(ellipse(nshift, ny - lift, nw, 0.055)) * 0.6, skin * 0.85)
    for sgn in (-1.0, 1.0):
        paint(cov(ellipse(sgn * nw * 0.55 + nshift, ny - lift + 0.025, nw * 0.32, 0.016)), skin * 0.35)
    for k in (0.06, 0.1, 0.14):
        paint(cov(segment(-0.05 + shift, ey + k, 0.05 + shift, ey + k, 0.005)) * (0.8 * au(9)), skin * 0.6)

    # mouth geometry
    mw = col("mw") * (1 + 0.22 * au(12) + 0.3 * au(20) - 0.35 * au(22) - 0.12 * au(27))
    mcx = 1.3 * shift
    corner = col("curve") - 0.09 * au(12) + 0.07 * au(15) + 0.01 * au(20)
    opening = (0.025 * au(25) + 0.09 * au(26) + 0.17 * au(27) + 0.02 * au(10) + 0.02 * au(16)) * (1 - 0.85 * au(24))
    lip = col("lt") * (1 - 0.5 * au(24) + 0.4 * au(22) - 0.25 * au(20))
    up_dy = -0.035 * au(10)
    lo_dy = 0.035 * au(16) - 0.015 * au(17)
    my = my + 0.5 * jaw  # the mouth follows the jaw down

    # nasolabial folds from the nostril wings to just outside the mouth corners
    fold = np.clip(0.1 + 0.55 * np.maximum(np.maximum(au(10), au(12)), 0.7 * au(9)) + 0.2 * au(6), 0, 0.85)
    for sgn in (-1.0, 1.0):
        d = segment(sgn * (nw + 0.02) + nshift, ny - lift, sgn * (mw + 0.03) + mcx, my + corner * 0.8, 0.006)
        paint(cov(d) * fold, skin * 0.6)

    t = (uu - mcx) / mw
    arc = np.sqrt(np.clip(1 - t * t, 0, 1))
    yc = my + corner * t * t
    ui = yc - (opening / 2 - up_dy) * arc
    li = yc + (opening / 2 + lo_dy) * arc
    dh = (np.abs(t) - 1) * mw
    lip_col = skin * (0.85, 0.5, 0.5)
    paint(cov(np.maximum(np.maximum(ui - lip * arc - vv, vv - li - 1.25 * lip * arc), dh)), lip_col)
    paint(cov(np.maximum(np.abs(vv - 0.5 * (ui + li)) - 0.004, dh)) * 0.8, skin * 0.3)  # closed-lip line
    cavity = cov(np.maximum(np.maximum(ui - vv, vv - li), dh))
    paint(cavity, np.full((b, 3), 0.12, dtype=f32) + skin * (0.2, 0.0, 0.0))
    teeth_on = np.clip(0.6 + au(10) + au(12), 0, 1)
    paint(cov(np.maximum(np.maximum(ui - vv, vv - ui - 0.03), dh + 0.15 * mw)) * cavity * teeth_on,
          np.full((b, 3), 0.9, dtype=f32))
    paint(cov(np.maximum(np.maximum(li - 0.025 - vv, vv - li), dh + 0.25 * mw)) * cavity * au(16),
          np.full((b, 3), 0.85, dtype=f32))
    # chin raise: mentalis bump shading and a crease under the lower lip
    chin_v = yc + opening / 2 + lo_dy + 1.25 * col("lt") + 0.05
    paint(cov(ellipse(mcx, chin_v + 0.04, 0.09, 0.045)) * (0.45 * au(17)), skin * 0.75)
    paint(cov(segment(mcx - 0.07, chin_v, mcx + 0.07, chin_v, 0.005)) * (0.7 * au(17)), skin * 0.55)

    # lighting, noise; quantisation happens in the caller's JPEG step
    light = col("bright") + col("gx") * x + col("gy") * y
    img *= light[:, None]
    rng = np.random.default_rng(noise_seed)
    img += rng.standard_normal(img.shape, dtype=f32) * p["noise"].reshape(b, 1, 1, 1)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def render_faces(nuisance: dict[str, np.ndarray], intensity: np.ndarray, img_size: int = 64,
                 noise_seed: int = 0) -> np.ndarray:
    """Faces for nuisance rows and AU intensities (N,18) -> uint8 (N,H,W,3) (no JPEG)."""
    out = [
        _render_batch({k: v[i:i + BATCH] for k, v in nuisance.items()}, intensity[i:i + BATCH], img_size,
                      noise_seed + i)
        for i in range(0, len(intensity), BATCH)
    ]
    return np.concatenate(out)


def _check_size(img_size: int) -> None:
    if not isinstance(img_size, int) or isinstance(img_size, bool) or not 48 <= img_size <= 224:
        raise ConfigError(f"img_size: {img_size!r} is out of range for the synthetic stand-in; allowed 48..224")


def synthesize_rafce(out_dir: str | Path, seed: int = 0, img_size: int = 64) -> Path:
    """Write the stand-in (3 label files + aligned/NNNN_aligned.jpg) into ``out_dir``; return it."""
    _check_size(img_size)
    out = Path(out_dir)
    (out / "aligned").mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence([seed, SYNTH_VERSION])
    # independent streams: changing one stage's draws leaves the others as they were
    label_rng, au_rng, text_rng, nuis_rng = (np.random.default_rng(s) for s in ss.spawn(4))
    keys, labels, parts = sample_labels(label_rng)
    present, intensity = sample_aus(au_rng, labels)
    au_text = au_label_text(text_rng, present)
    nuis = sample_nuisance(nuis_rng, len(keys))
    noise_seeds = np.random.SeedSequence([seed, SYNTH_VERSION, 1]).generate_state(len(keys) // BATCH + 1)

    def work(j: int) -> None:
        lo = j * BATCH
        sl = slice(lo, lo + BATCH)
        faces = _render_batch({k: v[sl] for k, v in nuis.items()}, intensity[sl], img_size, int(noise_seeds[j]))
        for i, face in enumerate(faces, start=lo):
            buf = io.BytesIO()
            Image.fromarray(face).save(buf, format="JPEG", quality=int(nuis["quality"][i]))
            (out / "aligned" / f"{Path(keys[i]).stem}_aligned.jpg").write_bytes(buf.getvalue())

    with ThreadPool(max(1, min(4, os.cpu_count() or 1))) as pool:  # numpy and PIL release the GIL
        pool.map(work, range((len(keys) + BATCH - 1) // BATCH))
    (out / EMO_FILE).write_text("".join(f"{k} {int(v)}\n" for k, v in zip(keys, labels)))
    (out / PARTITION_FILE).write_text("".join(f"{k} {int(v)}\n" for k, v in zip(keys, parts)))
    (out / AU_FILE).write_text("".join(f"{k} {t}\n" for k, t in zip(keys, au_text)))
    (out / "STANDIN.json").write_text(json.dumps({"generator": "fer_core.data.synthetic", "version": SYNTH_VERSION,
                                                  "seed": seed, "img_size": img_size}) + "\n")
    return out
