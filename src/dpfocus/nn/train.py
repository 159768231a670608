"""Training: synthetic DP scenes, the seeds' loss, resumable checkpoints, a loss log, a config file.

``L = L_deb + L_reb + lambda_coc L_coc + lambda_grad L_coc^grad``: L1 of the all-in-focus image,
L1 of the reblurred sharp target against the captured photo (the reblur path shares the kernels),
L1 of the CoC map and of its gradients; optionally (off by default) a KL term that ties the
retrieval to each entry's own CoC, and the reblur loss with the refocus's CoC-retrieved weights.
With ``dpdd`` (a DPDD-layout folder) a ``dpdd_fraction`` of the crops come from real pairs with
sharp targets, which train the first two terms only.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import SCENE_SIZE, RealPairPool, SceneSampler, ShardRecipe, check_chance, check_number, check_whole, list_shards, shard_scene_size
from .model import DPKernelNet, NetConfig

__all__ = ["TrainConfig", "train", "export_weights", "WEIGHTS_FORMAT"]

WEIGHTS_FORMAT = "dpfocus-network"
LOGGED_TERMS = ("total", "deblur", "reblur", "coc", "coc_grad", "disparity", "retrieval", "target_reblur")


@dataclass
class TrainConfig:
    steps: int = 2000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    lambda_coc: float = 0.05
    lambda_grad: float = 0.05
    lambda_disp: float = 0.1  # L1 of the disparity and its gradients (px): what the views show, whatever J is
    # KL from the true CoC's target weights (`DPKernelNet.target_weights`) to the learned retrieval
    # weights: each entry stands for its own CoC, so the kernel index names the kernel a pixel's CoC calls for
    lambda_retrieval: float = 0.0
    # the reblur loss again, with the target weights of the true CoC: the retrieval the refocus uses
    lambda_target_reblur: float = 0.0
    reblur_loss: bool = True
    seed: int = 0
    shards: str | None = None  # folder of npz shards (dpfocus.nn.data.make_shards); None: render on the fly
    # the --make-shards calls that rendered `shards` (ShardRecipe fields): training reads just their shards,
    # and a missing or half-rendered folder is named with the commands that render it
    shard_recipe: list = field(default_factory=list)
    checkpoint_every: int = 100
    threads: int = 2
    net: dict = field(default_factory=dict)  # NetConfig fields
    init: str | None = None  # weights file to start from (a fine-tune); its network config replaces `net`
    highlight_clip: float = 0.0  # chance a crop is overexposed (brightened 1.5-4x in linear light and clipped)
    dpdd: str | None = None  # folder of real DP pairs with sharp targets (DPDD layout: *_l, *_r, *_c/target)
    dpdd_fraction: float = 0.5  # with `dpdd`: each crop's chance of coming from it
    psf_variety: float = 0.0  # scenes rendered on the fly: chance of a PSF shaped like a calibrated one (shards: --psf-variety)
    device: str = "cpu"  # torch device: "cpu", "cuda", "cuda:N", or "auto" (the GPU if torch has one)
    workers: int = 0  # processes rendering on-the-fly scenes ahead of the training step (0: in turn with it)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        cfg = cls(**json.loads(Path(path).read_text()))
        cfg.check()
        return cfg

    def check(self) -> None:
        """ValueError naming the first field with a wrong type or an impossible value."""
        for name, least in (("steps", 1), ("batch", 1), ("seed", 0), ("checkpoint_every", 1), ("threads", 1), ("workers", 0), ("crop", 32)):
            check_whole(name, getattr(self, name), least)
        if self.crop % 4:
            raise ValueError(f"crop must be a multiple of 4 px, got {self.crop}")
        check_number("lr", self.lr, positive=True)
        for name in ("lambda_coc", "lambda_grad", "lambda_disp", "lambda_retrieval", "lambda_target_reblur"):
            check_number(name, getattr(self, name))
        for name in ("highlight_clip", "dpdd_fraction", "psf_variety"):
            check_chance(name, getattr(self, name))
        if not isinstance(self.reblur_loss, bool):
            raise ValueError(f"reblur_loss must be true or false, got {self.reblur_loss!r}")
        if not isinstance(self.net, dict):
            raise ValueError(f"net must be an object of network settings, got {self.net!r}")
        for name in ("shards", "init", "dpdd"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a path or null, got {getattr(self, name)!r}")
        self.recipes()
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be \"cpu\", \"cuda\", \"cuda:N\" or \"auto\", got {self.device!r}")

    def recipes(self) -> list[ShardRecipe]:
        """``shard_recipe`` as :class:`ShardRecipe` calls (ValueError naming the first bad one)."""
        if not isinstance(self.shard_recipe, list):
            raise ValueError(f"shard_recipe must be a list of --make-shards calls, got {self.shard_recipe!r}")
        if self.shard_recipe and not self.shards:
            raise ValueError("shard_recipe needs a shard folder: set shards to the folder its calls render into")
        recipes = []
        for i, spec in enumerate(self.shard_recipe):
            try:
                recipes.append(ShardRecipe.from_dict(spec))
            except ValueError as exc:
                raise ValueError(f"shard_recipe[{i}]: {exc}") from None
        sizes = sorted({recipe.scene_size for recipe in recipes})
        if len(sizes) > 1:
            raise ValueError(f"shard_recipe draws scenes of {' and '.join(f'{h}x{w}' for h, w in sizes)} px; "
                             "one shard folder holds scenes of one size")
        return recipes


def training_device(cfg: TrainConfig) -> torch.device:
    """The device ``cfg.device`` names, or a ValueError saying why it cannot be used here."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r}: this torch has no usable GPU (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use \"cpu\", or \"auto\" to take a GPU when there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {cfg.device!r}: there are {torch.cuda.device_count()} GPUs (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def losses(net: DPKernelNet, batch, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    device = net.J.device
    t = {k: torch.from_numpy(getattr(batch, k)).to(device) for k in ("left", "right", "aif", "combined", "coc")}
    out = net(t["left"], t["right"])
    terms = {"deblur": F.l1_loss(out.aif, t["aif"])}
    if cfg.reblur_loss:
        terms["reblur"] = F.l1_loss(net.reblur(t["aif"], out.weights), t["combined"])
    # crops of real pairs have no known depth: the CoC and disparity terms see the synthetic ones only
    depth = (torch.from_numpy(batch.has_depth) if batch.has_depth is not None else torch.ones(len(batch.J), dtype=torch.bool)).to(device)
    zero = out.coc.sum() * 0
    if depth.any():
        coc, true_coc = out.coc[depth], t["coc"][depth]
        terms["coc"] = cfg.lambda_coc * F.l1_loss(coc, true_coc)
        gx, gy = _grad(coc)
        tx, ty = _grad(true_coc)
        terms["coc_grad"] = cfg.lambda_grad * (F.l1_loss(gx, tx) + F.l1_loss(gy, ty))
    else:
        terms["coc"] = terms["coc_grad"] = zero
    if cfg.lambda_retrieval or cfg.lambda_target_reblur:
        if depth.any():
            wanted = net.target_weights(F.avg_pool2d(t["coc"][depth], 4))
            if cfg.lambda_retrieval:
                # from the logits: the log of the weights underflows (on training crops 45 % of the
                # stage-9 target mass sat on weights < 1e-8, where a clamped log has no gradient)
                learned = F.log_softmax(out.feats["retrieval_logits"][depth], dim=1)
                # a label: its gradient (log 0 where a weight underflows) would be NaN
                terms["retrieval"] = cfg.lambda_retrieval * F.kl_div(learned, wanted.detach(), reduction="none").sum(1).mean()
            if cfg.lambda_target_reblur:
                reblurred = net.reblur(t["aif"][depth], wanted)
                terms["target_reblur"] = cfg.lambda_target_reblur * F.l1_loss(reblurred, t["combined"][depth])
        else:
            terms["retrieval"] = terms["target_reblur"] = zero
    if cfg.lambda_disp:
        if depth.any():
            disp, d = out.disparity[depth], torch.from_numpy(batch.disparity).to(device)[depth]
            dx, dy = _grad(disp)
            ex, ey = _grad(d)
            terms["disparity"] = cfg.lambda_disp * (F.l1_loss(disp, d) + F.l1_loss(dx, ex) + F.l1_loss(dy, ey))
        else:
            terms["disparity"] = zero
    terms["total"] = sum(terms.values())
    return terms


def check_training_data(cfg: TrainConfig) -> list[Path] | None:
    """The config's shard files (None: scenes rendered on the fly): those its ``shard_recipe`` names,
    else every shard in its folder. ValueError if a shard the recipe names is missing (giving the
    commands that render them) or holds scenes of another size, if the folder holds none, if its
    crops do not fit inside its scenes (the shards', or ``SCENE_SIZE``), or if its real-pair folder
    holds no pair with a sharp target or pairs smaller than the crop."""
    if cfg.dpdd:
        side = RealPairPool(cfg.dpdd, size=1).smallest_side()
        if cfg.crop > side:
            raise ValueError(f"crop {cfg.crop} px does not fit the real pairs in {cfg.dpdd} ({side} px on their smaller side)")
    recipes = cfg.recipes()
    if recipes:
        planned = [(recipe, recipe.paths(cfg.shards)) for recipe in recipes]
        shards = [path for _, paths in planned for path in paths]
        missing = [path for path in shards if not path.is_file()]
        if missing:
            to_run = [recipe.command(cfg.shards) for recipe, paths in planned if not set(paths).isdisjoint(missing)]
            what = (f"none of the {len(shards)} shards this config trains on is there" if len(missing) == len(shards) else
                    f"{len(missing)} of the {len(shards)} shards this config trains on are missing (the first: {missing[0].name})")
            how = " and ".join(f"`{c}`" for c in to_run) + (" (each can run in its own process)" if len(to_run) > 1 else "")
            kept = "" if len(missing) == len(shards) else "; the shards already there are kept"
            raise ValueError(f"{cfg.shards}: {what}; render them with {how}{kept}")
        for recipe, paths in planned:
            found = shard_scene_size(paths[0])
            if found != recipe.scene_size:
                raise ValueError(f"{paths[0]}: holds {found[0]}x{found[1]} scenes, but this config's shard_recipe draws "
                                 f"{recipe.scene_size[0]}x{recipe.scene_size[1]}; render its shards into an empty folder")
    else:
        shards = list_shards(cfg.shards) if cfg.shards else None
        if cfg.shards and not shards:
            raise ValueError(f"{cfg.shards}: no scenes_*.npz shards; render them with `dpfocus train --make-shards 0 2000 -o {cfg.shards}`")
    h, w = shard_scene_size(shards[0]) if shards else SCENE_SIZE
    if cfg.crop > min(h, w):
        where = f"the shards in {cfg.shards}" if shards else "scenes rendered on the fly"
        raise ValueError(f"crop {cfg.crop} px does not fit the {h}x{w} training scenes ({where}); use a crop of at most "
                         f"{min(h, w)} px, or render larger scenes with --make-shards FIRST COUNT --scene-size H W")
    return shards


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True, log=print) -> Path:
    """Train (or resume) into ``out_dir``: checkpoint.pt, log.csv, config.json, weights.pt at the end."""
    cfg.check()
    shards = check_training_data(cfg)
    device = training_device(cfg)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if cfg.init:
        from .backend import load_network  # raises NetworkWeightsError, naming the file, if unusable

        net = load_network(cfg.init)
        log(f"starting from {cfg.init}")
    else:
        net = DPKernelNet(NetConfig(**cfg.net))
    net.to(device)
    log(f"training on {device}" + (f", {cfg.workers} processes rendering scenes" if cfg.workers and not shards else ""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    warmup = max(1, cfg.steps // 20)

    def lr_factor(i: int) -> float:  # warm-up, then cosine to zero at cfg.steps (a longer resume stretches it)
        return min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, cfg.steps) / cfg.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    step = 0
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        sampler_state = state.get("sampler") or {"rng": state["sampler_rng"]}  # older checkpoints: the crop generator alone
        log(f"resumed at step {step}")
    real = RealPairPool(cfg.dpdd, seed=cfg.seed) if cfg.dpdd else None
    if real is not None:
        log(f"{len(real.pairs)} real pairs with sharp targets in {cfg.dpdd}; {cfg.dpdd_fraction:.0%} of the crops come from them")
    sampler = SceneSampler(shards, seed=cfg.seed, crop=cfg.crop, highlight_clip=cfg.highlight_clip, real=real, real_fraction=cfg.dpdd_fraction,
                           psf_variety=cfg.psf_variety, workers=cfg.workers)
    if step:
        sampler.set_state(sampler_state)
        if real is not None and state.get("real_pool"):
            real.set_state(state["real_pool"])
    new_log = not (out / "log.csv").exists() or step == 0
    # a resumed run keeps its log's columns (logs from before the retrieval terms have six)
    logged = LOGGED_TERMS
    if not new_log:
        with open(out / "log.csv", newline="") as existing:
            logged = tuple(next(csv.reader(existing))[1:-2])
    with open(out / "log.csv", "w" if new_log else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["step"] + list(logged) + ["lr", "seconds"])
        t0 = time.perf_counter()
        try:
            while step < cfg.steps:
                net.train()
                terms = losses(net, sampler.batch(cfg.batch), cfg)
                opt.zero_grad()
                terms["total"].backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                writer.writerow([step] + [f"{float(terms[k].detach()) if k in terms else 0.0:.5f}" for k in logged]
                                + [f"{sched.get_last_lr()[0]:.2e}", f"{time.perf_counter() - t0:.1f}"])
                if step % 10 == 0:
                    fh.flush()
                    log(f"step {step}/{cfg.steps}: " + ", ".join(f"{k} {float(v.detach()):.4f}" for k, v in terms.items()))
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    tmp = ckpt.with_suffix(".tmp")
                    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                "step": step, "sampler": sampler.state(),
                                "real_pool": real.state() if real is not None else None}, tmp)
                    tmp.replace(ckpt)
        finally:
            sampler.close()
    return export_weights(net, out / "weights.pt", {"steps": step, "train_config": asdict(cfg)})


def export_weights(net: DPKernelNet, path: str | Path, info: dict | None = None) -> Path:
    """The shipped file: tensors and plain values only, so ``torch.load(weights_only=True)`` reads it."""
    path = Path(path)
    payload = {"format": WEIGHTS_FORMAT, "version": 1, "config": net.config.to_dict(),
               "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, "info": json.dumps(info or {})}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path
