"""Find, load, validate and save dual-pixel pairs and the project's maps.

Supported layouts (a path to either view, or to a folder holding exactly one pair):

* suffixes: ``scene_L.png`` / ``scene_R.png``, ``scene_left.png`` / ``scene_right.png``;
* tokens: ``result_pd_left_0001.png`` / ``result_pd_right_0001.png`` (Google Pixel), ``left.png`` /
  ``right.png``;
* folders: Canon DPDD ``test_l/source/X.png`` / ``test_r/source/X.png`` with the ordinary photo in
  ``test_c/source/X.png`` and the sharp target in ``test_c/target/X.png`` (also ``train_*``, ``val_*``),
  and ``left/X.png`` / ``right/X.png``.

Images load as float32 in [0, 1] (``H x W`` or ``H x W x 3``); 8- and 16-bit PNG/TIFF and float
TIFF are read; single-channel raw-like 16-bit data can take black and white levels. Every problem
raises :class:`DPPairError` with one line naming the file, what is wrong, and how to fix it.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DPPairError",
    "DPPair",
    "IMAGE_SUFFIXES",
    "read_image",
    "save_image",
    "save_map",
    "find_partner",
    "find_pair_in_folder",
    "list_pairs",
    "load_pair",
    "resolve_pair_paths",
    "dpdd_extras",
    "quantise",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class DPPairError(ValueError):
    """A dual-pixel input problem, with a one-line message a user can act on."""


def views_photo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The ordinary photo a DP pair's views add up to: their mean in linear light, display-encoded
    (a DP pixel sums the light of its two halves; the mean of the encoded values is 43-45 dB from
    the rendered photo on synthetic scenes, this 105 dB)."""
    from .optics import linear_to_srgb, srgb_to_linear

    return linear_to_srgb((srgb_to_linear(left) + srgb_to_linear(right)) / 2).astype(np.float32)


@dataclass
class DPPair:
    """A validated dual-pixel pair.

    Attributes
    ----------
    left, right : ndarray
        float32 views in [0, 1], display-encoded, same shape (``H x W`` or ``H x W x 3``).
    name : str
        Short stem used in layer and file names (the file name without its view token).
    left_path, right_path : Path or None
    bit_depth : int
        8, 16, or 32 (float input).
    layout : str
        Which naming layout matched ("suffix", "token", "dpdd", "folders", "files", "arrays").
    combined, target : ndarray or None
        The ordinary photo and the sharp target when the layout provides them (DPDD ``*_c``).
    """

    left: np.ndarray
    right: np.ndarray
    name: str
    left_path: Path | None = None
    right_path: Path | None = None
    bit_depth: int = 16
    layout: str = "files"
    combined: np.ndarray | None = None
    target: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.left.shape

    @property
    def channels(self) -> int:
        return 1 if self.left.ndim == 2 else self.left.shape[2]

    @property
    def photo(self) -> np.ndarray:
        """The ordinary photo: ``combined`` when the layout provides one, else :func:`views_photo`."""
        return self.combined if self.combined is not None else views_photo(self.left, self.right)

    @property
    def pair_id(self) -> str:
        """Stable identifier of the pair (its paths, or its name for in-memory pairs)."""
        if self.left_path is not None:
            return f"{self.left_path.resolve()}|{self.right_path.resolve() if self.right_path else ''}"
        return self.name

    def metadata(self) -> dict:
        """The ``"dpfocus"`` metadata dict carried by layers made from this pair."""
        return {
            "pair_id": self.pair_id,
            "name": self.name,
            "left_path": str(self.left_path) if self.left_path else None,
            "right_path": str(self.right_path) if self.right_path else None,
            "bit_depth": self.bit_depth,
            "channels": self.channels,
            "layout": self.layout,
        }

    @classmethod
    def from_arrays(cls, left: np.ndarray, right: np.ndarray, name: str = "pair", bit_depth: int = 16) -> "DPPair":
        """Build a pair from in-memory views (validated like files)."""
        left = _validate_array(np.asarray(left), f"{name} left view")
        right = _validate_array(np.asarray(right), f"{name} right view")
        _check_same_shape(left, right, f"{name} left view", f"{name} right view")
        return cls(left=left, right=right, name=name, bit_depth=bit_depth, layout="arrays")


# --------------------------------------------------------------------------- reading


def _validate_array(img: np.ndarray, what: str) -> np.ndarray:
    if img.size == 0 or img.ndim not in (2, 3):
        raise DPPairError(f"{what}: expected an H x W or H x W x 3 image, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise DPPairError(f"{what}: expected 1, 3 or 4 channels, got {img.shape[2]}; save it as grey or RGB")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if img.dtype.kind == "f":
        if not np.all(np.isfinite(img)):
            bad = int(np.size(img) - np.isfinite(img).sum())
            raise DPPairError(f"{what}: contains {bad} NaN/Inf values; replace them (e.g. with 0) and save again")
        if img.min() < -1e-3 or img.max() > 1 + 1e-3:
            raise DPPairError(
                f"{what}: float values span [{img.min():.3g}, {img.max():.3g}], expected [0, 1]; "
                "rescale the image, or pass black/white levels"
            )
        return np.clip(img, 0, 1).astype(np.float32)
    raise DPPairError(f"{what}: unsupported pixel type {img.dtype}; save as 8- or 16-bit PNG/TIFF or float32 TIFF")


def _decode(path: Path) -> np.ndarray:
    """Raw pixel array of an image file (RGB order), or DPPairError."""
    if not path.exists():
        raise DPPairError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise DPPairError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DPPairError(f"{path}: file is empty; re-export or re-copy it")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DPPairError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(path)
        else:
            import cv2

            img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise ValueError("decoder returned nothing")
            if img.ndim == 3 and img.shape[2] >= 3:
                img = np.ascontiguousarray(img[..., [2, 1, 0] + list(range(3, img.shape[2]))])
    except DPPairError:
        raise
    except Exception as exc:  # every decoder failure becomes one actionable line
        raise DPPairError(f"{path}: cannot decode image ({type(exc).__name__}: {exc}); the file is corrupt or not a {suffix} image") from None
    return np.asarray(img)


def read_image(
    path: str | os.PathLike,
    *,
    black_level: float | None = None,
    white_level: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read one image as float32 in [0, 1] and its bit depth (8, 16, or 32 for float).

    ``black_level``/``white_level`` (in the file's integer units) map raw sensor values to [0, 1];
    values outside are clipped. Without them, integers are divided by their type's maximum.
    """
    path = Path(path)
    raw = _decode(path)
    bit_depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(raw.dtype, 32)
    if black_level is not None or white_level is not None:
        if raw.dtype.kind not in "uif":
            raise DPPairError(f"{path}: black/white levels need integer or float pixels, got {raw.dtype}")
        black = 0.0 if black_level is None else float(black_level)
        white = float(white_level if white_level is not None else (np.iinfo(raw.dtype).max if raw.dtype.kind in "ui" else 1.0))
        if not white > black:
            raise DPPairError(f"{path}: white level {white:g} must be above black level {black:g}")
        if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
            raise DPPairError(f"{path}: contains NaN/Inf values; replace them and save again")
        scaled = np.clip((raw.astype(np.float32) - black) / (white - black), 0, 1)
        return _validate_array(scaled, str(path)), bit_depth
    return _validate_array(raw, str(path)), bit_depth


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, so a failure leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def quantise(img: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """A [0, 1] image as 8- or 16-bit integers (clipped, rounded): what a file of that depth holds."""
    return np.round(np.clip(img, 0, 1) * (2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16)


def save_image(path: str | os.PathLike, img: np.ndarray, bit_depth: int = 16) -> Path:
    """Save a [0, 1] image as 8- or 16-bit PNG/TIFF (``bit_depth`` 32 writes float32 TIFF)."""
    path = Path(path)
    img = np.asarray(img, np.float32)
    suffix = path.suffix.lower()
    if bit_depth not in (8, 16, 32):
        raise ValueError(f"bit_depth must be 8, 16 or 32, got {bit_depth}")
    if bit_depth == 32:
        if suffix not in (".tif", ".tiff"):
            raise ValueError(f"{path}: float images need a .tif/.tiff name")
        return save_map(path, img)
    data = quantise(img, bit_depth)
    if suffix in (".tif", ".tiff"):
        import tifffile

        _atomic_write(path, lambda p: tifffile.imwrite(p, data, compression="zlib"))
        return path
    if suffix not in (".png",) and not (suffix in (".jpg", ".jpeg") and bit_depth == 8):
        raise ValueError(f"{path}: save {bit_depth}-bit images as .png or .tif")
    import cv2

    bgr = data[..., ::-1] if data.ndim == 3 else data

    def write(p: Path) -> None:
        ok, buf = cv2.imencode(suffix, np.ascontiguousarray(bgr))
        if not ok:
            raise OSError(f"{path}: could not encode image")
        p.write_bytes(buf.tobytes())

    _atomic_write(path, write)
    return path


def save_map(path: str | os.PathLike, data: np.ndarray) -> Path:
    """Save a map as TIFF keeping its dtype (float32 maps, uint16 indices), zlib-compressed."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: maps are written as .tif/.tiff")
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    _atomic_write(path, lambda p: tifffile.imwrite(p, arr, compression="zlib"))
    return path


# --------------------------------------------------------------------------- pairing

def _swap_case(word: str, like: str) -> str:
    return word.upper() if like.isupper() else (word.capitalize() if like[0].isupper() else word)


def _swap_stem(stem: str, to_right: bool) -> tuple[str, str, str] | None:
    """``(partner stem, pair name, layout)`` if the stem carries a view token, else None.

    Tokens: a ``_L``/``_R`` (or ``_l``/``_r``) suffix, or the word left/right delimited by ``_ . -``
    or the ends of the stem (``scene_left``, ``result_pd_left_0001``, ``left``).
    """
    src, dst = ("L", "R") if to_right else ("R", "L")
    for a, b in ((src, dst), (src.lower(), dst.lower())):
        if stem.endswith("_" + a) and len(stem) > 2:
            return stem[:-1] + b, stem[:-2], "suffix"
    word_src, word_dst = ("left", "right") if to_right else ("right", "left")
    m = re.search(rf"(^|[_.-])({word_src})([_.-]|$)", stem, re.IGNORECASE)
    if m:
        partner = stem[: m.start(2)] + _swap_case(word_dst, m.group(2)) + stem[m.end(2) :]
        name = re.sub(r"[_.-]{2,}", "_", stem[: m.start(2)] + stem[m.end(2) :]).strip("_.-")
        return partner, name, "token"
    return None


def _folder_partner(folder: str) -> tuple[str, bool, str] | None:
    """``(partner folder, is_left, layout)`` for DPDD ``*_l``/``*_r`` and ``left``/``right`` folders."""
    for a, b in (("_l", "_r"), ("_L", "_R")):
        if folder.endswith(a) and len(folder) > 2:
            return folder[:-2] + b, True, "dpdd"
        if folder.endswith(b) and len(folder) > 2:
            return folder[:-2] + a, False, "dpdd"
    if folder.lower() in ("left", "right"):
        is_left = folder.lower() == "left"
        return _swap_case("right" if is_left else "left", folder), is_left, "folders"
    return None


def _with_stem(path: Path, stem: str) -> Path | None:
    """The existing file with that stem beside ``path`` (same suffix preferred), or None."""
    for suffix in (path.suffix, *IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)):
        cand = path.with_name(stem + suffix)
        if cand.exists():
            return cand
    return None


def _dir_partner(path: Path) -> tuple[Path, Path, str] | None:
    """Partner through the folder layout: the same file name under the partner folder."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        found = _folder_partner(parts[i])
        if found is None:
            continue
        other, is_left, layout = found
        cand = Path(*parts[:i], other, *parts[i + 1 :])
        if cand.exists():
            return (path, cand, layout) if is_left else (cand, path, layout)
    return None


def find_partner(path: str | os.PathLike) -> tuple[Path, Path, str, str]:
    """Given one view of a pair, return ``(left, right, name, layout)``.

    Raises DPPairError when the name carries no view token or the partner file is missing.
    """
    path = Path(path)
    for to_right in (True, False):
        swapped = _swap_stem(path.stem, to_right)
        if swapped is None:
            continue
        partner_stem, name, layout = swapped
        name = name or path.parent.name or "pair"
        partner = _with_stem(path, partner_stem)
        if partner is None:
            expected = path.with_name(partner_stem + path.suffix)
            raise DPPairError(f"{path}: its partner view {expected.name} is missing in {path.parent}; put both views side by side or pass both files")
        return (path, partner, name, layout) if to_right else (partner, path, name, layout)
    found = _dir_partner(path)
    if found is not None:
        left, right, layout = found
        return left, right, path.stem, layout
    raise DPPairError(
        f"{path}: cannot tell which view this is; name the views *_L/*_R or *_left/*_right, "
        "use DPDD folders (test_l/test_r), or pass both files"
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def list_pairs(folder: str | os.PathLike) -> list[tuple[Path, Path, str, str]]:
    """All pairs in a folder: its own files, DPDD split folders, or ``left``/``right`` folders.

    Returns ``(left, right, name, layout)`` tuples sorted by name. Files without a view token are
    ignored; a left view without its partner is reported.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DPPairError(f"{folder}: not a folder")
    pairs: dict[tuple[Path, Path], tuple[Path, Path, str, str]] = {}
    candidates = list(_images_in(folder))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = _folder_partner(sub.name)
        if found is not None and found[1]:  # left folders; their partners come from find_partner
            src = sub / "source" if (sub / "source").is_dir() else sub
            candidates += _images_in(src)
    for path in candidates:
        try:
            left, right, name, layout = find_partner(path)
        except DPPairError:
            if _swap_stem(path.stem, True) is not None or _swap_stem(path.stem, False) is not None:
                raise  # a view whose partner is missing: say so rather than skip it
            continue
        pairs[(left.resolve(), right.resolve())] = (left, right, name, layout)
    return sorted(pairs.values(), key=lambda p: (p[2], str(p[0])))


def find_pair_in_folder(folder: str | os.PathLike) -> tuple[Path, Path, str, str]:
    """The one pair a folder holds (see :func:`list_pairs`), or DPPairError."""
    folder = Path(folder)
    pairs = list_pairs(folder)
    if not pairs:
        raise DPPairError(f"{folder}: no dual-pixel pair found; expected files named *_L/*_R or *_left/*_right, or DPDD folders")
    if len(pairs) > 1:
        names = ", ".join(p[2] for p in pairs[:5]) + (", ..." if len(pairs) > 5 else "")
        raise DPPairError(f"{folder}: holds {len(pairs)} pairs ({names}); pass one view's file instead of the folder")
    return pairs[0]


def resolve_pair_paths(left: str | os.PathLike, right: str | os.PathLike | None = None) -> tuple[Path, Path, str, str]:
    """``(left, right, name, layout)`` from a folder, one view, or two files."""
    left = Path(left)
    if right is not None:
        right = Path(right)
        for p in (left, right):
            if not p.exists():
                raise DPPairError(f"{p}: file not found; check the path")
        swapped = _swap_stem(left.stem, True)
        return left, right, (swapped[1] if swapped else "") or left.stem, "files"
    if not left.exists():
        raise DPPairError(f"{left}: file or folder not found; check the path")
    if left.is_dir():
        return find_pair_in_folder(left)
    return find_partner(left)


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise DPPairError(
            f"{name_a} is {'x'.join(map(str, a.shape))} but {name_b} is {'x'.join(map(str, b.shape))}; "
            "both views must have the same size and channels (crop or convert one)"
        )


def dpdd_extras(left: Path) -> dict[str, Path]:
    """The DPDD ordinary photo (``*_c/source``) and sharp target (``*_c/target``) for a left view."""
    out = {}
    parts = left.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].endswith("_l") and i + 1 < len(parts) and parts[i + 1] == "source":
            base = Path(*parts[:i])
            c = parts[i][:-2] + "_c"
            for key, sub in (("combined", "source"), ("target", "target")):
                cand = base / c / sub / Path(*parts[i + 2 :])
                if cand.exists():
                    out[key] = cand
            break
    return out


def load_pair(
    left: str | os.PathLike,
    right: str | os.PathLike | None = None,
    *,
    black_level: float | None = None,
    white_level: float | None = None,
) -> DPPair:
    """Load and validate a DP pair from two files, one view (partner found), or a folder.

    Parameters
    ----------
    left : path
        The left view, either view (its partner is found by name or folder), or a folder holding
        exactly one pair.
    right : path, optional
        The right view, when both are given explicitly.
    black_level, white_level : float, optional
        Raw sensor levels for single-channel 16-bit data.

    Raises
    ------
    DPPairError
        Missing partner, unreadable or empty file, unsupported type, NaN/Inf, or views that differ in
        size or channels.
    """
    left_path, right_path, name, layout = resolve_pair_paths(left, right)
    if left_path.resolve() == right_path.resolve():
        raise DPPairError(f"{left_path}: the left and right view are the same file; pass the other view too")
    levels = {"black_level": black_level, "white_level": white_level}
    left_img, bits_l = read_image(left_path, **levels)
    right_img, bits_r = read_image(right_path, **levels)
    _check_same_shape(left_img, right_img, str(left_path), str(right_path))
    if bits_l != bits_r:
        raise DPPairError(f"{left_path} is {bits_l}-bit but {right_path} is {bits_r}-bit; save both views with the same bit depth")
    pair = DPPair(left=left_img, right=right_img, name=name, left_path=left_path, right_path=right_path, bit_depth=bits_l, layout=layout)
    for key, path in dpdd_extras(left_path).items():
        img, _ = read_image(path)
        if img.shape == left_img.shape:
            setattr(pair, key, img)
    return pair


def looks_like_pair(path: str | os.PathLike) -> bool:
    """Cheap check (no decoding) that a path names one view of a pair or a folder with one pair."""
    try:
        p = Path(path)
        if p.is_dir():
            find_pair_in_folder(p)
            return True
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            return False
        find_partner(p)
        return True
    except (DPPairError, OSError):
        return False
