"""Command line: ``dpfocus analyze | refocus | sweep | deblur | kernels | evaluate | demo | info`` (DESIGN.md contract).

Bad input exits with code 2 and one line saying what is wrong and how to fix it (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .io import DPPair, DPPairError, load_pair, quantise, read_image, save_image

from .analysis import BackendError
from .refocus import FocusError

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the command line; its message is printed as one line."""


def _cmd_info(args: argparse.Namespace) -> int:
    pairs = _several_pairs(args)
    if pairs:  # a folder of pairs (a DPDD split): every pair checked, one JSON line each
        return _for_each_pair(pairs, args, lambda pair, name: print(json.dumps(_pair_info(pair))), done=f"read from {args.left}")
    print(json.dumps(_pair_info(_load(args)), indent=2))
    return 0


def _pair_info(pair: DPPair) -> dict:
    info = dict(pair.metadata(), shape=list(pair.shape))
    info["has_combined"] = pair.combined is not None
    info["has_target"] = pair.target is not None
    return info


def _load(args: argparse.Namespace) -> DPPair:
    return load_pair(args.left, args.right, black_level=args.black_level, white_level=args.white_level)


def _check_output_file(out: str, pair: DPPair) -> Path:
    path = Path(out)
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise UsageError(f"{path}: write the image as .png or .tif")
    for src in (pair.left_path, pair.right_path):
        if src is not None and path.resolve() == src.resolve():
            raise UsageError(f"{path}: is an input view; choose another output name (inputs are never overwritten)")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name such as {path / 'refocused.png'}")
    return path


def _pair_record(pair: DPPair) -> dict:
    """The views a result came from, as the JSON records beside it name them."""
    return {"left": str(pair.left_path) if pair.left_path else None, "right": str(pair.right_path) if pair.right_path else None}


def _analyze(pair: DPPair, args: argparse.Namespace):
    from .analysis import analyze

    return analyze(pair, backend=args.backend, tile=args.tile)


def _note_unused_tile(args: argparse.Namespace) -> None:
    """Once per command: ``--tile`` given to a known backend that does not tile."""
    from .analysis import backend_tiles, backends

    if getattr(args, "tile", None) is not None and args.backend in backends() and not backend_tiles(args.backend):
        print(f"note: --tile has no effect with the {args.backend} backend (it works on the whole image)", file=sys.stderr)


def _output_folder(path: str, purpose: str) -> Path:
    """``path`` as a folder for ``purpose``; UsageError if a file is in the way."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; give a folder for {purpose}")
    return out


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import require_backend

    out = _output_folder(args.output, "the analysis files")
    require_backend(args.backend)
    pairs = _several_pairs(args)
    if pairs:
        return _for_each_pair(pairs, args, lambda pair, name: _analyze_into(pair, out / name, args, list_files=False))
    pair = _load(args)
    _analyze_into(pair, out, args, list_files=True)
    return 0


def _analyze_into(pair: DPPair, out: Path, args: argparse.Namespace, list_files: bool) -> None:
    from .analysis import save_analysis

    analysis = _analyze(pair, args)
    files = save_analysis(analysis, out, bit_depth=pair.bit_depth)
    timings = analysis.meta["timings"]
    print(f"{pair.name}: {args.backend} analysis in {timings['total_s']:.2f} s; "
          f"disparity {analysis.disparity.min():.2f} .. {analysis.disparity.max():.2f} px, J = {analysis.coc_per_disparity:.4f}"
          + ("" if list_files else f" -> {out}"))
    if analysis.backdrop_note():
        print(f"{pair.name}: {analysis.backdrop_note()}")
    if list_files:
        for key, path in files.items():
            print(f"{key}: {path}")


def _several_pairs(args: argparse.Namespace) -> list | None:
    """The pairs of a folder named alone that holds more than one (None otherwise)."""
    if args.right is None and Path(args.left).is_dir():
        from .io import list_pairs

        pairs = list_pairs(args.left)
        if len(pairs) > 1:
            return pairs
    return None


def _for_each_pair(pairs: list, args: argparse.Namespace, work, done: str | None = None) -> int:
    """``work(pair, output name)`` for every pair of a folder; a pair that cannot be read, or whose
    focus target finds nothing in it, is reported and skipped (nothing written for it), the others
    still run; exit 2 if any was skipped."""
    levels = {"black_level": args.black_level, "white_level": args.white_level}
    names: dict[str, int] = {}
    failed = []
    for left, right, name, layout in pairs:
        names[name] = names.get(name, 0) + 1
        try:
            pair = load_pair(left, right, **levels)
            pair.layout = layout  # how the folder holds it, not "files"
            work(pair, name if names[name] == 1 else f"{name}_{names[name]}")
        except (DPPairError, FocusError) as exc:
            print(f"dpfocus {args.command}: skipped {name}: {exc}", file=sys.stderr)
            failed.append(name)
    if done is None:
        print(f"{len(pairs) - len(failed)} of {len(pairs)} pairs done into {args.output}")
    else:  # stdout holds the per-pair results alone
        print(f"{len(pairs) - len(failed)} of {len(pairs)} pairs {done}", file=sys.stderr)
    if failed:
        print(f"dpfocus {args.command}: error: {len(failed)} pair(s) skipped ({', '.join(failed)}); fix or remove them and run again",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _sam_model(args: argparse.Namespace):
    """SAM from --sam, else DPFOCUS_SAM_CHECKPOINT (a bad env checkpoint: a note, then no SAM)."""
    from .prompts import configured_sam, load_sam

    if args.sam:
        return load_sam(args.sam)
    found = configured_sam()
    if found.model is None and found.message:
        print(f"dpfocus {args.command}: note: {found.message}", file=sys.stderr)
    return found.model


def _clip_model(args: argparse.Namespace):
    """CLIP from --clip, else DPFOCUS_CLIP_CHECKPOINT (a bad env checkpoint: a note, then no CLIP)."""
    import os

    from .prompts import CLIP_MODEL_ENV, configured_clip, load_clip

    if args.clip:
        return load_clip(args.clip, args.clip_model or os.environ.get(CLIP_MODEL_ENV) or None)
    found = configured_clip()
    if found.model is None and found.message:
        print(f"dpfocus {args.command}: note: {found.message}", file=sys.stderr)
    return found.model


def _resolve_prompt_target(target: dict, analysis) -> dict:
    """Targets that need the analysis (text; points and boxes with SAM) become a focus mask."""
    if "prompt" not in target:
        return target
    from .prompts import mask_from_box, mask_from_points, mask_from_text

    kind, value, sam, clip = target["prompt"]
    if kind == "text":
        return {"mask": mask_from_text(analysis, value, sam=sam, clip=clip)}
    if kind == "point":
        return {"mask": mask_from_points(analysis, [(value[1], value[0])], sam=sam)}
    return {"mask": mask_from_box(analysis, value, sam=sam)}


def _read_mask(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A mask image's pixels above 0.5 (any channel), checked against the pair's size."""
    mask, _ = read_image(path)
    mask = (mask.max(axis=2) if mask.ndim == 3 else mask) > 0.5
    h, w = shape[:2]
    if mask.shape != (h, w):
        raise UsageError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the pair is {w}x{h}; draw it on the same pair")
    return mask


def _focus_mask_from_args(args: argparse.Namespace, pair: DPPair | None):
    """(kind, value) of the focus target, validated against the pair before any analysis runs (no pair:
    --text and --disparity, which fit every pair of a folder)."""
    from .refocus import box_mask, point_mask

    if args.text is not None:
        if not any(c.isalnum() for c in args.text):
            raise UsageError("--text is empty; describe the region, e.g. --text 'nearest object'")
        clip = _clip_model(args)  # checkpoints load (and fail) before the analysis runs
        sam = _sam_model(args) if clip is not None else None  # SAM only proposes regions for CLIP
        return {"prompt": ("text", args.text, sam, clip)}
    if args.disparity is not None:
        return {"d_trg": args.disparity}
    h, w = pair.shape[:2]
    if args.mask is not None:
        mask = _read_mask(args.mask, (h, w))
        if not mask.any():
            raise UsageError(f"{args.mask}: mask is empty (no pixel above 0.5); paint the region to bring into focus")
        return {"mask": mask}
    if args.point is not None:
        point_mask((h, w), *args.point)  # validates
        sam = _sam_model(args)
        return {"prompt": ("point", tuple(args.point), sam, None)} if sam is not None else {"point": tuple(args.point)}
    if args.box is not None:
        box_mask((h, w), *args.box)
        sam = _sam_model(args)
        return {"prompt": ("box", tuple(args.box), sam, None)} if sam is not None else {"box": tuple(args.box)}
    raise UsageError("give a focus target: --mask M.png, --point X Y, --box X0 Y0 X1 Y1, --text \"...\" or --disparity D")


def _cmd_refocus_record(args: argparse.Namespace) -> int:
    """Re-render an exported refocus from its record (the pair given on the command line wins)."""
    from .export import load_record
    from .refocus import render_refocus

    record = load_record(args.record)
    if args.left is None:
        args.left, args.right = record["pair"]["left"], record["pair"]["right"]
    args.backend = record.get("backend") or args.backend
    pair = _load(args)
    out = _check_output_file(args.output, pair)
    strength, tolerance = float(record.get("strength", 1.0)), float(record.get("tolerance", 0.0))
    if record.get("renderer", "layered") == "network":  # the network's reblur path: the exported mask is the target
        from .nn.backend import network_refocus

        mask_file = (record.get("files") or {}).get("focus_mask")
        folder = Path(args.record) if Path(args.record).is_dir() else Path(args.record).parent
        if not mask_file or not (folder / mask_file).is_file():
            raise UsageError(f"{args.record}: rendered by the network's reblur path, which needs the exported focus mask; "
                             f"{mask_file or 'focus_mask.png'} is missing beside the record")
        img = network_refocus(pair, _read_mask(folder / mask_file, pair.shape), strength, tolerance=tolerance)[1]
        how = "the network's reblur path"
    else:
        img = render_refocus(_analyze(pair, args), float(record["d_trg"]), strength, tolerance)
        how = args.backend
    save_image(out, img, _output_bits(pair))
    print(f"{out}: reproduced {args.record} (d_trg = {record['d_trg']:.3f} px, strength {strength:g}, tolerance {tolerance:g}, {how})")
    return 0


def _cmd_refocus(args: argparse.Namespace) -> int:
    if args.record is not None:
        return _cmd_refocus_record(args)
    if args.left is None:
        raise UsageError("give the DP pair to refocus (LEFT [RIGHT]), or --record record.json from an export")
    from .refocus import check_controls

    check_controls(args.strength, args.tolerance)
    pairs = _several_pairs(args)
    if pairs:  # a folder of pairs: one target that fits every pair, OUT is a folder of <pair name>.png
        from .analysis import require_backend

        if args.text is None and args.disparity is None:
            raise UsageError(f"{args.left} holds {len(pairs)} pairs: give a target that fits every pair (--text or --disparity), "
                             "or refocus one pair's file with --mask / --point / --box")
        folder = _output_folder(args.output, "the refocused images of a folder of pairs")
        require_backend(args.backend)
        target = _focus_mask_from_args(args, None)  # checkpoints load once, before any pair runs
        folder.mkdir(parents=True, exist_ok=True)
        return _for_each_pair(pairs, args, lambda pair, name: _refocus_into(pair, _check_output_file(str(folder / f"{name}.png"), pair), target, args))
    pair = _load(args)
    out = _check_output_file(args.output, pair)
    _refocus_into(pair, out, _focus_mask_from_args(args, pair), args)
    return 0


def _refocus_into(pair: DPPair, out: Path, target: dict, args: argparse.Namespace) -> None:
    from .refocus import RefocusPreview, focus_disparity, render_refocus

    if args.quality == "network":
        return _network_refocus_into(pair, out, target, args)
    analysis = _analyze(pair, args)
    d_trg = focus_disparity(analysis, **_resolve_prompt_target(target, analysis))
    if args.quality == "preview":
        img = _full_size(RefocusPreview(analysis).render(d_trg, args.strength, args.tolerance), pair)
    else:
        img = render_refocus(analysis, d_trg, args.strength, args.tolerance)
    save_image(out, img, _output_bits(pair))
    print(f"{out}: refocused at d_trg = {d_trg:.3f} px, strength {args.strength:g}, tolerance {args.tolerance:g} ({args.quality})")


def _network_refocus_into(pair: DPPair, out: Path, target: dict, args: argparse.Namespace) -> None:
    """``--quality network``: the network's own reblur path on the target region (a text prompt is
    resolved on the ``--backend`` analysis first)."""
    from .nn.backend import network_refocus
    from .refocus import box_mask, point_mask

    if "d_trg" in target:
        raise UsageError("--quality network refocuses on a region (--mask, --point, --box or --text), not on --disparity")
    if "prompt" in target:
        target = _resolve_prompt_target(target, _analyze(pair, args))
    if "point" in target:
        mask = point_mask(pair.shape[:2], *target["point"])
    elif "box" in target:
        mask = box_mask(pair.shape[:2], *target["box"])
    else:
        mask = target["mask"]
    d_trg, img = network_refocus(pair, mask, args.strength, tolerance=args.tolerance)
    save_image(out, img, _output_bits(pair))
    print(f"{out}: refocused by the network's reblur path at d_trg = {d_trg:.3f} px (its own disparity), strength {args.strength:g}")


def _full_size(img: np.ndarray, pair: DPPair) -> np.ndarray:
    """A preview (reduced resolution) scaled back to the pair's size."""
    import cv2

    if img.shape[:2] == pair.shape[:2]:
        return img
    return cv2.resize(img, (pair.shape[1], pair.shape[0]), interpolation=cv2.INTER_LINEAR)


def _output_bits(pair: DPPair) -> int:
    """Outputs keep the input's bit depth (float inputs are written as 16-bit)."""
    return pair.bit_depth if pair.bit_depth in (8, 16) else 16


SWEEP_RECORD = "sweep.json"


def _cmd_sweep(args: argparse.Namespace) -> int:
    """A focal stack: the focal plane swept from the nearest to the farthest surface, one image per step."""
    from .analysis import require_backend
    from .refocus import check_controls, check_sweep

    check_controls(args.strength, args.tolerance)
    check_sweep(args.steps, *(args.range or (None, None)))
    if args.frame_ms < 10:
        raise UsageError(f"--frame-ms {args.frame_ms}: give at least 10 ms per frame")
    pairs = _several_pairs(args)
    if pairs:  # a folder of pairs: OUT/<pair name>/ each
        out = _output_folder(args.output, "the sweeps of a folder of pairs")
        require_backend(args.backend)
        for _, _, name, _ in pairs:  # every pair's folder is checked before any pair runs
            _new_sweep_folder(out / name)
        return _for_each_pair(pairs, args, lambda pair, name: _sweep_into(pair, _new_sweep_folder(out / name), args))
    out = _new_sweep_folder(Path(args.output))  # before the pair is decoded
    _sweep_into(_load(args), out, args)
    return 0


def _new_sweep_folder(folder: Path) -> Path:
    """``folder`` unless it already holds a sweep (earlier results are never overwritten)."""
    folder = _output_folder(str(folder), "the sweep's images")
    earlier = sorted(folder.glob("sweep*")) if folder.is_dir() else []
    if earlier:
        raise UsageError(f"{folder}: already holds a sweep ({earlier[0].name}); choose a new folder (earlier results are never overwritten)")
    return folder


def _sweep_into(pair: DPPair, out: Path, args: argparse.Namespace) -> None:
    from .refocus import focus_sweep, sweep_disparities

    digits = len(str(args.steps - 1))
    frames = [_check_output_file(str(out / f"sweep_{i:0{digits}d}.png"), pair) for i in range(args.steps)]
    analysis = _analyze(pair, args)
    near, far = args.range if args.range is not None else (None, None)
    try:
        disparities = sweep_disparities(analysis, args.steps, near, far)
    except FocusError as exc:
        raise FocusError(f"{pair.name}: {exc} with --range NEAR FAR") from None
    out.mkdir(parents=True, exist_ok=True)
    bits = _output_bits(pair)
    entries, gif_frames = [], []
    for path, (d_trg, img) in zip(frames, focus_sweep(analysis, disparities, args.strength, args.tolerance, args.quality)):
        img = _full_size(img, pair)
        save_image(path, img, bits)
        entries.append({"image": path.name, "d_trg_px": d_trg, "captured_coc_px": analysis.coc_per_disparity * d_trg})
        if args.gif:
            gif_frames.append(quantise(img, 8))
        print(f"{path}: focus at d_trg = {d_trg:+.3f} px")
    record = {
        "pair": _pair_record(pair),
        "backend": analysis.backend, "version": __version__, "quality": args.quality,
        "strength": args.strength, "tolerance": args.tolerance, "frames": entries,
    }
    if args.gif:
        from PIL import Image

        mode = "RGB" if gif_frames[0].ndim == 3 else "L"
        images = [Image.fromarray(f, mode) for f in gif_frames]
        images[0].save(out / "sweep.gif", save_all=True, append_images=images[1:], duration=args.frame_ms, loop=0)
        record["gif"] = "sweep.gif"
        print(f"{out / 'sweep.gif'}: {len(images)} frames, {args.frame_ms} ms each")
    (out / SWEEP_RECORD).write_text(json.dumps(record, indent=2))
    print(f"{out / SWEEP_RECORD}: {len(entries)} focus planes from {disparities[0]:+.3f} to {disparities[-1]:+.3f} px ({args.quality})")


def _cmd_deblur(args: argparse.Namespace) -> int:
    pairs = _several_pairs(args)
    if pairs:  # a folder of pairs: OUT is a folder of <pair name>.png
        from .analysis import require_backend

        folder = _output_folder(args.output, "the images of a folder of pairs")
        require_backend(args.backend)
        folder.mkdir(parents=True, exist_ok=True)
        return _for_each_pair(pairs, args, lambda pair, name: _deblur_into(pair, _check_output_file(str(folder / f"{name}.png"), pair), args))
    pair = _load(args)
    _deblur_into(pair, _check_output_file(args.output, pair), args)
    return 0


def _deblur_into(pair: DPPair, out: Path, args: argparse.Namespace) -> None:
    analysis = _analyze(pair, args)
    save_image(out, analysis.aif, _output_bits(pair))
    print(f"{out}: all-in-focus image ({args.backend})")


def _cmd_kernels(args: argparse.Namespace) -> int:
    """The kernel inspector without a window: atlas, usage (image / mask) and clicked pixels' kernels."""
    pairs = _several_pairs(args)
    if pairs:  # a folder of pairs: OUT/<pair name>/ each, atlas and usage only
        from .analysis import require_backend

        if args.mask is not None or args.point:
            raise UsageError(f"{args.left} holds {len(pairs)} pairs: --mask and --point name pixels of one image; "
                             "give them with one pair's files, or leave them out to get every pair's atlas and usage")
        out = _output_folder(args.output, "the kernel files of a folder of pairs")
        require_backend(args.backend)
        return _for_each_pair(pairs, args, lambda pair, name: _kernels_into(pair, _output_folder(str(out / name), "the kernel files"), args, None))
    pair = _load(args)
    out = _output_folder(args.output, "the kernel files")
    mask = None
    if args.mask is not None:
        mask = _read_mask(args.mask, pair.shape)
    h, w = pair.shape[:2]
    for x, y in args.point or []:
        if not (0 <= x < w and 0 <= y < h):
            raise UsageError(f"--point {x:g} {y:g} lies outside the {w}x{h} image; use 0 <= X < {w}, 0 <= Y < {h}")
    _kernels_into(pair, out, args, mask)
    return 0


def _kernels_into(pair: DPPair, out: Path, args: argparse.Namespace, mask: np.ndarray | None) -> None:
    from .kernels import crop_to_support, kernel_atlas, kernel_usage, pixel_kernels

    analysis = _analyze(pair, args)
    out.mkdir(parents=True, exist_ok=True)
    atlas = kernel_atlas(analysis)
    save_image(out / "atlas.png", atlas.image, 8)
    report = {
        "pair": _pair_record(pair),
        "backend": analysis.backend,
        "kernels": [{"index": i, "coc_px": float(c), "label": label, "tile_yxhw": [int(v) for v in box[1:]], "pixels": int(n)}
                    for i, (c, label, box, n) in enumerate(zip(analysis.kernel_cocs, atlas.labels, atlas.boxes, kernel_usage(analysis)))],
        "points": [],
    }
    if mask is not None:
        for entry, n in zip(report["kernels"], kernel_usage(analysis, mask)):
            entry["pixels_in_mask"] = int(n)
    for x, y in args.point or []:
        p = pixel_kernels(analysis, y, x)
        k = crop_to_support(np.stack([p.left, p.right, p.combined]), margin=2)
        strip = np.concatenate([kk / max(float(kk.max()), 1e-12) for kk in k], axis=1)
        name = f"kernel_x{p.x}_y{p.y}.png"
        save_image(out / name, strip.astype(np.float32), 8)
        report["points"].append({"x": p.x, "y": p.y, "disparity_px": p.disparity, "coc_px": p.coc, "image": name,
                                 "top": [{"index": i, "weight": wgt, "coc_px": c} for i, wgt, c in p.top]})
        print(f"pixel x={p.x} y={p.y}: CoC {p.coc:+.2f} px; top " + ", ".join(f"#{i} {wgt:.2f}" for i, wgt, _ in p.top))
    (out / "kernels.json").write_text(json.dumps(report, indent=2, default=float))
    used = sum(1 for entry in report["kernels"] if entry["pixels"] > 0)
    print(f"{out / 'atlas.png'}: {len(analysis.kernel_cocs)} kernels, {used} in use ({pair.name}); usage in {out / 'kernels.json'}")


BUILTIN_CONFIGS = Path(__file__).parent / "nn" / "configs"


def _chance(args: argparse.Namespace, name: str) -> float:
    """``--featureless P`` / ``--psf-variety P`` (train --make-shards, evaluate): a chance in [0, 1]."""
    from .nn.data import check_chance

    value = getattr(args, name)
    try:
        check_chance(name, value)
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')} {value}: give a chance between 0 and 1") from None
    return value


def _builtin_config_names() -> str:
    return ", ".join(sorted(f.stem for f in BUILTIN_CONFIGS.glob("*.json")))


def _cmd_train(args: argparse.Namespace) -> int:
    """Train the network (or render its training shards), resumable; see dpfocus.nn.train."""
    from .nn.data import SCENE_SIZE, make_shards
    from .nn.train import TrainConfig, check_training_data, train, training_device

    if args.make_shards is not None:
        first, count = args.make_shards
        if first < 0 or count < 1:
            raise UsageError(f"--make-shards {first} {count}: give a FIRST scene >= 0 and a COUNT >= 1")
        height, width = args.scene_size or SCENE_SIZE
        if min(height, width) < 64:
            raise UsageError(f"--scene-size {height} {width}: training scenes need at least 64 px on each side")
        make_shards(args.output, first, count, height=height, width=width, featureless=_chance(args, "featureless"),
                    psf_variety=_chance(args, "psf_variety"))
        return 0
    config_path = Path(args.config)
    if not config_path.is_file():
        builtin = BUILTIN_CONFIGS / f"{args.config}.json"
        if not builtin.is_file():
            raise UsageError(f"{args.config}: no such config file (or built-in: {_builtin_config_names()})")
        config_path = builtin
    try:
        cfg = TrainConfig.load(config_path)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{config_path}: not a training config ({exc})") from None
    if args.steps is not None:
        cfg.steps = args.steps
    if args.shards is not None:  # the user's own folder: every shard in it, whatever the config's recipe was
        cfg.shards, cfg.shard_recipe = args.shards, []
    if args.init is not None:
        cfg.init = args.init
    if args.dpdd is not None:
        cfg.dpdd = args.dpdd
    if args.device is not None:
        cfg.device = args.device
    if args.workers is not None:
        cfg.workers = args.workers
    if args.dpdd_fraction is not None:
        if not cfg.dpdd:
            raise UsageError("--dpdd-fraction needs real pairs to mix in: add --dpdd FOLDER (or a config with \"dpdd\")")
        cfg.dpdd_fraction = args.dpdd_fraction
    try:
        cfg.check()
        check_training_data(cfg)
        training_device(cfg)
    except ValueError as exc:
        raise UsageError(f"{exc} (config {config_path}{', with --steps' if args.steps is not None else ''})") from None
    weights = train(cfg, args.output, resume=not args.restart)
    print(f"weights: {weights}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .analysis import MIN_ANALYSIS_SIDE
    from .evaluate import evaluate, format_report

    if args.scenes < 0 or (args.scenes == 0 and not args.dpdd):
        raise UsageError(f"--scenes {args.scenes}: give at least 1 synthetic scene (or 0 with --dpdd FOLDER)")
    if min(args.size) < MIN_ANALYSIS_SIDE:
        raise UsageError(f"--size {args.size[0]} {args.size[1]}: the scenes need at least {MIN_ANALYSIS_SIDE} px on each side")
    report = evaluate(backends=args.backend, n_scenes=args.scenes, dpdd=args.dpdd, size=tuple(args.size),
                      featureless=_chance(args, "featureless"))
    text = format_report(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import display_available, run_headless, run_interactive
    from .samples import sample_names

    if args.sample not in sample_names():
        raise UsageError(f"unknown sample {args.sample!r}; choose one of {', '.join(sample_names())}")
    if not args.headless and display_available():
        run_interactive(args.sample)
        return 0
    out = Path(args.output or "dpfocus-demo")
    if not args.headless:
        print(f"no display found: running headless, writing pictures to {out}/")
    written = run_headless(out, args.sample, screenshot=not args.no_screenshot)
    for key, path in written.items():
        print(f"{key}: {path}")
    if "screenshot" not in written and not args.no_screenshot:
        print("screenshot: skipped (no X display and no Xvfb; install the xvfb package for a viewer screenshot)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpfocus", description="Dual-pixel defocus analysis and refocusing.")
    parser.add_argument("--version", action="version", version=f"dpfocus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def pair_args(p: argparse.ArgumentParser, analysis: bool = True, optional_pair: bool = False) -> None:
        p.add_argument("left", nargs="?" if optional_pair else None,
                       help="left view, either view (partner found by name), or a folder with one pair")
        p.add_argument("right", nargs="?", help="right view, when both files are given")
        p.add_argument("--black-level", type=float, help="raw black level (single-channel 16-bit data)")
        p.add_argument("--white-level", type=float, help="raw white level (single-channel 16-bit data)")
        if analysis:
            p.add_argument("--backend", default="classical", help="analysis backend (default: classical)")
            p.add_argument("--tile", type=int, default=None, help="tile size (px) for backends that tile (network; default: the whole image up to 2.5 MP, 768 px tiles beyond; at least 256)")

    p = sub.add_parser("info", help="validate a DP pair and print what was found")
    pair_args(p, analysis=False)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("analyze", help="disparity, CoC, kernel index and all-in-focus maps into a folder")
    pair_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder (for a folder of several pairs: one sub-folder per pair)")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("refocus", help="refocus a DP pair on a mask, point, box or text, or reproduce an export")
    pair_args(p, optional_pair=True)
    p.add_argument("--record", help="record.json of a napari export: reproduce that image (pair, backend, target, controls)")
    p.add_argument("-o", "--output", required=True, help="output image (.png keeps the input bit depth, or .tif); "
                   "for a folder of several pairs with --text or --disparity: a folder of <pair name>.png")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--mask", help="image whose non-zero pixels are the region to focus on")
    target.add_argument("--point", type=float, nargs=2, metavar=("X", "Y"), help="focus on the region around a pixel")
    target.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="focus on a box")
    target.add_argument("--text", help="focus on what a phrase describes: depth/position words ('nearest object', "
                        "'background', 'left'), or free text with a CLIP model")
    target.add_argument("--disparity", type=float, help="focus at this disparity (px)")
    p.add_argument("--sam", metavar="CKPT", help="Segment Anything checkpoint for --point/--box/--text "
                   "(default: $DPFOCUS_SAM_CHECKPOINT; none: weight-free segmentation)")
    p.add_argument("--clip", metavar="CKPT", help="OpenCLIP checkpoint for free-text --text (default: $DPFOCUS_CLIP_CHECKPOINT; "
                   "needs pip install open_clip_torch)")
    p.add_argument("--clip-model", metavar="NAME", help="OpenCLIP architecture of --clip, e.g. ViT-B-32 "
                   "(default: $DPFOCUS_CLIP_MODEL, else matched from the weights)")
    p.add_argument("--strength", type=float, default=1.0, help="aperture scale: 1 = as captured, 0 = all in focus")
    p.add_argument("--tolerance", type=float, default=0.0, help="disparity band (px) kept sharp around the target")
    p.add_argument("--quality", choices=("preview", "full", "network"), default="full",
                   help="full: the layered renderer on the analysis; network: the network's own reblur path (its learned "
                   "kernels, no --tolerance); preview: the live preview's render")
    p.set_defaults(func=_cmd_refocus)

    p = sub.add_parser("sweep", help="focal stack: refocus from the nearest to the farthest surface, one image per step")
    pair_args(p)
    p.add_argument("-o", "--output", required=True, help="new output folder (sweep_NN.png, sweep.json, sweep.gif with --gif; "
                   "for a folder of several pairs: one sub-folder per pair)")
    p.add_argument("--steps", type=int, default=12, help="number of focus planes (default 12, at least 2)")
    p.add_argument("--range", type=float, nargs=2, metavar=("NEAR", "FAR"),
                   help="first and last focus disparity in px (default: the nearest and farthest surface)")
    p.add_argument("--strength", type=float, default=1.0, help="aperture scale: 1 = as captured, 2 = twice the blur")
    p.add_argument("--tolerance", type=float, default=0.0, help="disparity band (px) kept sharp around each plane")
    p.add_argument("--quality", choices=("preview", "full"), default="full")
    p.add_argument("--gif", action="store_true", help="also write sweep.gif, an 8-bit animation of the frames")
    p.add_argument("--frame-ms", type=int, default=250, help="with --gif: milliseconds per frame (default 250)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("deblur", help="write the all-in-focus image")
    pair_args(p)
    p.add_argument("-o", "--output", required=True, help="output image (for a folder of several pairs: a folder of <pair name>.png)")
    p.set_defaults(func=_cmd_deblur)

    p = sub.add_parser("kernels", help="kernel inspector: bank atlas, kernel usage, and the kernels of chosen pixels")
    pair_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder (atlas.png, kernels.json, kernel_xX_yY.png; for a folder of several pairs: a folder per pair)")
    p.add_argument("--point", type=float, nargs=2, action="append", metavar=("X", "Y"), help="a pixel to inspect (repeatable)")
    p.add_argument("--mask", help="count kernel usage inside this mask too")
    p.set_defaults(func=_cmd_kernels)

    p = sub.add_parser("train", help="train the network on synthetic DP scenes (resumable), or render training shards")
    p.add_argument("-o", "--output", required=True, help="run folder (checkpoint.pt, log.csv, config.json, weights.pt)")
    p.add_argument("--config", default="small", help=f"config JSON, or a built-in name: {_builtin_config_names()} (default: small)")
    p.add_argument("--steps", type=int, help="override the config's number of steps")
    p.add_argument("--shards", help="folder of training shards, all of them used (default: the config's, just the shards its shard_recipe names)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in the run folder")
    p.add_argument("--init", help="start from this weights file (fine-tune), e.g. the shipped one")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:N, or auto (a GPU if torch has one; default: the config's, cpu)")
    p.add_argument("--workers", type=int, help="processes rendering on-the-fly scenes ahead of the training steps "
                   "(default: the config's, 0; the same scenes whatever the number)")
    p.add_argument("--dpdd", metavar="FOLDER", help="also train on real DP pairs with sharp targets (DPDD layout: train_l/source, "
                   "train_r/source, train_c/target; the training split only): deblur and reblur terms")
    p.add_argument("--dpdd-fraction", type=float, metavar="P", help="with --dpdd: each crop's chance of being real (default 0.5)")
    p.add_argument("--make-shards", type=int, nargs=2, metavar=("FIRST", "COUNT"), help="render COUNT training scenes into -o and stop")
    p.add_argument("--scene-size", type=int, nargs=2, metavar=("H", "W"),
                   help="with --make-shards: the scenes' height and width in px (default 192 256)")
    p.add_argument("--featureless", type=float, default=0.0, metavar="P",
                   help="with --make-shards: each surface's chance of being featureless (sky, plain wall, blown highlight)")
    p.add_argument("--psf-variety", type=float, default=0.0, metavar="P",
                   help="with --make-shards: each scene's chance of a PSF shaped like a calibrated real one "
                   "(polygonal stop, unequal halves, off-axis vignetting)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="benchmark backends on held-out synthetic scenes (and DPDD folders)")
    p.add_argument("--backend", action="append", default=None, help="backend(s) to evaluate (default: all)")
    p.add_argument("--scenes", type=int, default=8, help="number of held-out synthetic scenes")
    p.add_argument("--size", type=int, nargs=2, default=[384, 576], metavar=("H", "W"))
    p.add_argument("--dpdd", help="a DPDD-layout folder with test_c/target, evaluated too")
    p.add_argument("--featureless", type=float, default=0.0, metavar="P",
                   help="draw the scenes with featureless surfaces (each one a flat colour with chance P)")
    p.add_argument("--json", help="also write the report as JSON")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="open napari with a sample pair (or write the pictures headless)")
    p.add_argument("--headless", action="store_true", help="no window: write PNGs (and a viewer screenshot under Xvfb)")
    p.add_argument("-o", "--output", help="output folder for --headless (default: dpfocus-demo)")
    p.add_argument("--sample", default="garden", help="which bundled sample (default: garden)")
    p.add_argument("--no-screenshot", action="store_true", help="skip the napari viewer screenshot")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _note_unused_tile(args)
        return int(args.func(args) or 0)
    except (DPPairError, UsageError, FocusError, BackendError) as exc:
        print(f"dpfocus {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
