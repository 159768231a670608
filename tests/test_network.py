"""The network backend: kernel set constraints, PSF block round trip, training, shipped weights, tiling."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dpfocus.analysis import analyze, backends
from dpfocus.cli import main
from dpfocus.evaluate import psnr, spearman
from dpfocus.io import DPPair
from dpfocus.nn.backend import WEIGHTS_PATH, NetworkWeightsError, load_network, network_refocus, run_network
from dpfocus.nn.data import SceneSampler, make_shards, render_training_scene, shard_scene_size
from dpfocus.nn.model import DPKernelNet, NetConfig
from dpfocus.nn.train import TrainConfig, check_training_data, export_weights, losses
from dpfocus.refocus import focus_disparity
from dpfocus.samples import load_ground_truth, load_sample

TINY = NetConfig(width=16, match_width=8, n_kernels=6, kernel_size=9)


def test_kernel_set_is_left_right_symmetric_and_normalised():
    net = DPKernelNet(TINY)
    kl, kr, k = net.kernels()
    assert kl.shape == (6, 9, 9)
    torch.testing.assert_close(kr, torch.flip(kl, dims=[-1]))
    torch.testing.assert_close(k, torch.flip(k, dims=[-1]))
    torch.testing.assert_close(kl.sum((1, 2)), torch.ones(6))
    cocs = net.kernel_cocs()
    assert torch.all(cocs[1:] > cocs[:-1]) and cocs[0] < 0 < cocs[-1]  # both signs of defocus


def test_retrieval_weights_sum_to_one_and_outputs_have_the_input_size():
    net = DPKernelNet(TINY)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        out = net(x, torch.roll(x, 2, dims=-1))
    assert out.aif.shape == x.shape and out.disparity.shape == (1, 1, 64, 96)
    assert out.weights.shape == (1, 6, 16, 24)
    torch.testing.assert_close(out.weights.sum(1), torch.ones(1, 16, 24))


def test_psf_block_inverse_undoes_the_reblur_kernel():
    torch.manual_seed(0)
    net = DPKernelNet(NetConfig(n_kernels=16, kernel_size=13))
    with torch.no_grad():
        net.log_eps.fill_(np.log(1e-3))
        _, _, k = net.kernels()
        i = 9  # a blurred entry (|CoC| ~ 7 px at full res)
        feat = torch.nn.functional.avg_pool2d(torch.rand(1, 4, 160, 160), 5, 1, 2)[..., 40:120, 40:120]
        onehot = torch.zeros(1, 16, 80, 80)
        onehot[:, i] = 1
        blurred = net._apply_bank(feat, k, onehot)
        restored = net._apply_bank(blurred, net.inverse_kernels(k), onehot)
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    before = (blurred - feat)[inner].abs().mean()
    after = (restored - feat)[inner].abs().mean()
    assert after < 0.7 * before


def test_bank_application_is_the_same_with_and_without_gradients():
    net = DPKernelNet(TINY)
    f = torch.rand(2, 5, 12, 14)
    w = torch.softmax(torch.rand(2, 6, 12, 14), 1)
    k = net.kernels()[2].detach()
    with_grad = net._apply_bank(f, k, w)
    with torch.no_grad():
        without = net._apply_bank(f, k, w)
    torch.testing.assert_close(with_grad, without, atol=1e-5, rtol=1e-5)


def test_mirrored_training_crops_keep_the_disparity_sign():
    from conftest import horizontal_shift

    # a training scene with everything behind focus (every disparity above 1 px)
    s = next(s for s in (render_training_scene(100_000 + i, 96, 160) for i in range(60)) if s["disparity"].min() > 1)
    sampler = SceneSampler(None, seed=0, crop=80)
    sampler.data = {k: (np.round(v * 65535).astype(np.uint16) if k in ("left", "right", "aif", "combined") else np.asarray(v))[None]
                    for k, v in s.items() if k != "grey"}
    shifts = []
    for _ in range(12):
        b = sampler.batch(1)
        d = float(np.median(b.disparity))
        est = horizontal_shift(b.left[0].transpose(1, 2, 0), b.right[0].transpose(1, 2, 0), 12)
        shifts.append((d, est))
    assert all(d > 0 and est > 1 for d, est in shifts)  # mirrored or not, the right view sits at +d


def test_overexposed_training_crops_clip_each_view_and_keep_the_geometry():
    from dpfocus.nn.data import _overexpose

    s = render_training_scene(100_004, 96, 128)
    item = {k: s[k].astype(np.float32).copy() for k in ("left", "right", "aif", "combined", "disparity")}
    before = {k: v.copy() for k, v in item.items()}
    _overexpose(item, 4.0)
    assert (item["left"] >= 1.0 - 1e-6).mean() > 0.05 and item["left"].mean() > before["left"].mean()
    assert max(item[k].max() for k in ("left", "right", "aif", "combined")) <= 1.0
    np.testing.assert_array_equal(item["disparity"], before["disparity"])
    lin = lambda x: np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)  # noqa: E731
    np.testing.assert_allclose(lin(item["combined"]), (lin(item["left"]) + lin(item["right"])) / 2, atol=1e-4)  # mean of clipped views
    sampler = SceneSampler(None, seed=1, crop=64, highlight_clip=1.0)
    sampler.data = {k: (np.round(v * 65535).astype(np.uint16) if k in ("left", "right", "aif", "combined") else np.asarray(v))[None]
                    for k, v in s.items() if k != "grey"}
    assert all(sampler.batch(1).left.max() > s["left"].max() for _ in range(3))  # brightened 1.5-4x


def test_shards_hold_the_rendered_scenes_in_order(tmp_path):
    paths = make_shards(tmp_path, 10, 5, per_shard=2, height=48, width=64, log=lambda m: None)
    assert [p.name for p in paths] == ["scenes_0000010.npz", "scenes_0000012.npz", "scenes_0000014.npz"]
    sampler = SceneSampler(paths, seed=0, crop=32)
    assert len(sampler) == 5 and sampler.data["left"].shape == (5, 48, 64, 3) and sampler.data["left"].dtype == np.uint16
    for i in (0, 3, 4):  # first scene, one from the middle shard's second slot, the last shard's only one
        scene = render_training_scene(100_000 + 10 + i, 48, 64)
        assert np.array_equal(sampler.data["left"][i], np.round(scene["left"] * 65535).astype(np.uint16))
        assert np.allclose(sampler.data["disparity"][i], scene["disparity"], atol=2e-2)
    assert sampler.batch(2).left.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="crop 64 px does not fit the 48x64 training scenes"):
        check_training_data(TrainConfig(crop=64, shards=str(tmp_path)))
    check_training_data(TrainConfig(crop=48, shards=str(tmp_path)))
    with pytest.raises(ValueError, match="no scenes_"):
        check_training_data(TrainConfig(shards=str(tmp_path / "empty")))


def test_a_config_names_the_shards_it_trains_on_and_how_to_render_the_missing_ones(tmp_path, capsys):
    folder = tmp_path / "shards"
    recipe = [{"first": 0, "count": 2, "scene_size": [64, 96]}, {"first": 200, "count": 3, "scene_size": [64, 96], "featureless": 0.5}]
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"crop": 64, "steps": 1, "batch": 2, "net": {"width": 16, "match_width": 8, "n_kernels": 6, "kernel_size": 9},
                                  "shards": str(folder), "shard_recipe": recipe}))
    assert main(["train", "--make-shards", "0", "2", "--scene-size", "64", "96", "-o", str(folder)]) == 0
    assert main(["train", "--make-shards", "400", "1", "--scene-size", "64", "96", "-o", str(folder)]) == 0  # not the config's
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "-o", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not run.exists()
    assert "1 of the 2 shards this config trains on are missing (the first: scenes_0000200.npz)" in err
    hint = err.split("`")[1]  # only the call whose shards are missing
    assert hint == f"dpfocus train --make-shards 200 3 --scene-size 64 96 --featureless 0.5 -o {folder}"
    assert main(hint.split()[1:]) == 0
    cfg = TrainConfig.load(config)
    assert [p.name for p in check_training_data(cfg)] == ["scenes_0000000.npz", "scenes_0000200.npz"]  # not scenes_0000400
    assert main(["train", "--config", str(config), "-o", str(run)]) == 0
    own = tmp_path / "own"  # --shards: a folder of the user's, every shard in it, the config's recipe set aside
    assert main(["train", "--make-shards", "600", "2", "--scene-size", "64", "96", "-o", str(own)]) == 0
    assert main(["train", "--config", str(config), "--shards", str(own), "-o", str(tmp_path / "own_run")]) == 0
    cfg.shard_recipe = [{"first": 0, "count": 2}]  # the default 192x256, but the folder holds 64x96 scenes
    with pytest.raises(ValueError, match="scenes_0000000.npz: holds 64x96 scenes, but this config's shard_recipe draws 192x256"):
        check_training_data(cfg)


def test_builtin_configs_name_how_their_shards_were_rendered():
    from dpfocus.cli import BUILTIN_CONFIGS

    for path in BUILTIN_CONFIGS.glob("*.json"):
        cfg = TrainConfig.load(path)
        assert bool(cfg.shards) == bool(cfg.recipes()), path.name
    cfg = TrainConfig.load(BUILTIN_CONFIGS / "finetune_kernel_retrieval.json")
    assert [r.command(cfg.shards) for r in cfg.recipes()] == [
        "dpfocus train --make-shards 26000 1600 --scene-size 384 384 --featureless 0.1 -o runs/shards_v9"]


def test_cli_renders_shards_of_the_asked_size(tmp_path):
    assert main(["train", "--make-shards", "3", "2", "--scene-size", "64", "96", "-o", str(tmp_path)]) == 0
    (shard,) = sorted(tmp_path.glob("scenes_*.npz"))
    assert shard_scene_size(shard) == (64, 96)


def test_training_scenes_with_real_lens_psfs(tmp_path):
    plain = render_training_scene(100_003, 64, 96)
    shaped = render_training_scene(100_003, 64, 96, psf_variety=1.0)
    assert not np.array_equal(plain["left"], shaped["left"])  # another PSF, the same scene layout
    np.testing.assert_array_equal(plain["aif"], shaped["aif"])
    assert main(["train", "--make-shards", "3", "2", "--scene-size", "64", "96", "--psf-variety", "1", "-o", str(tmp_path / "s")]) == 0
    assert len(list((tmp_path / "s").glob("scenes_*.npz"))) == 1
    assert main(["train", "--make-shards", "3", "2", "--psf-variety", "3", "-o", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    batch = SceneSampler(None, seed=2, crop=64, scene_size=(64, 96), psf_variety=1.0).batch(2)  # on the fly too
    assert batch.left.shape == (2, 3, 64, 64)


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    cfg = TrainConfig(batch=2, crop=64, net=TINY.to_dict())
    net = DPKernelNet(TINY)
    batch = SceneSampler(None, seed=3, crop=64).batch(2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = float(losses(net, batch, cfg)["total"].detach())
    for _ in range(25):
        loss = losses(net, batch, cfg)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(losses(net, batch, cfg)["total"].detach()) < 0.8 * first


def test_the_retrieval_loss_ties_each_entry_to_its_own_coc():
    torch.manual_seed(0)
    cfg = TrainConfig(batch=2, crop=64, net=TINY.to_dict(), lambda_retrieval=0.05, lambda_target_reblur=1.0)
    net = DPKernelNet(TINY)
    with torch.no_grad():  # a learned term that picks entry 0 everywhere, as a collapsed set would
        net.retrieval[-1].bias[0] = 3.0
    batch = SceneSampler(None, seed=3, crop=64).batch(2)
    coc4 = F.avg_pool2d(torch.from_numpy(batch.coc), 4)
    nearest = (coc4 - net.kernel_cocs().detach().view(1, -1, 1, 1)).abs().argmin(1)

    def agreement() -> float:
        with torch.no_grad():
            return float((net(torch.from_numpy(batch.left), torch.from_numpy(batch.right)).weights.argmax(1) == nearest).float().mean())

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    before, first = agreement(), losses(net, batch, cfg)
    assert float(first["target_reblur"].detach()) > 0
    for _ in range(25):
        terms = losses(net, batch, cfg)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        # target weights underflow to 0 far from the true CoC: still finite
        assert all(torch.isfinite(p).all() for p in net.parameters())
    assert float(losses(net, batch, cfg)["retrieval"].detach()) < 0.5 * float(first["retrieval"].detach())
    assert before < 0.3 and agreement() > 0.9
    assert "retrieval" not in losses(net, batch, TrainConfig(batch=2, crop=64, net=TINY.to_dict()))  # off by default


def test_cli_train_tiny_config_runs_resumes_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "-o", str(out)]) == 0
    for name in ("checkpoint.pt", "log.csv", "config.json", "weights.pt"):
        assert (out / name).is_file()
    assert len((out / "log.csv").read_text().splitlines()) == 1 + 4
    assert main(["train", "--config", "tiny", "--steps", "6", "-o", str(out)]) == 0  # resumes at step 4
    assert len((out / "log.csv").read_text().splitlines()) == 1 + 6
    net = load_network(out / "weights.pt")
    assert net.config.n_kernels == 6
    assert main(["train", "--config", "nonexistent", "-o", str(out)]) == 2
    # a run logged before the retrieval terms keeps its log's six columns when it resumes
    rows = [row.split(",") for row in (out / "log.csv").read_text().splitlines()]
    old = [r[:7] + r[9:] for r in rows]
    (out / "log.csv").write_text("\n".join(",".join(r) for r in old) + "\n")
    assert main(["train", "--config", "tiny", "--steps", "8", "-o", str(out)]) == 0
    assert {len(row.split(",")) for row in (out / "log.csv").read_text().splitlines()} == {len(old[0])}


def _trained(cfg: TrainConfig, out) -> dict:
    from dpfocus.nn.train import train

    return torch.load(train(cfg, out, log=lambda *_: None), weights_only=True)["state_dict"]


def test_scenes_rendered_by_worker_processes_train_the_same_weights(tmp_path):
    from dpfocus.cli import BUILTIN_CONFIGS

    cfg = TrainConfig.load(BUILTIN_CONFIGS / "tiny.json")
    alone = _trained(cfg, tmp_path / "alone")
    cfg.workers = 2
    with_workers = _trained(cfg, tmp_path / "workers")
    for name in alone:
        torch.testing.assert_close(with_workers[name], alone[name], rtol=0, atol=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_interrupted_training_run_resumes_to_the_same_weights(tmp_path, monkeypatch, workers):
    from dpfocus.cli import BUILTIN_CONFIGS
    from dpfocus.nn.train import train

    cfg = TrainConfig.load(BUILTIN_CONFIGS / "tiny.json")
    cfg.steps, cfg.checkpoint_every, cfg.workers = 6, 1, workers
    whole = _trained(cfg, tmp_path / "whole")
    batch, calls = SceneSampler.batch, []

    def interrupted_after_four_steps(self, size):
        calls.append(size)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return batch(self, size)

    monkeypatch.setattr(SceneSampler, "batch", interrupted_after_four_steps)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", log=lambda *_: None)
    monkeypatch.setattr(SceneSampler, "batch", batch)
    resumed = _trained(cfg, tmp_path / "resumed")
    # the scenes rendered on the fly continue where they stopped (they restarted before: 7e-4 apart)
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0)


@pytest.mark.parametrize(
    "args,config,message",
    [
        ([], {"steps": "many"}, "steps must be a whole number >= 1, got 'many'"),
        ([], {"crop": 300}, "crop 300 px does not fit the 192x256 training scenes"),
        ([], {"crop": 130}, "crop must be a multiple of 4 px"),
        (["--make-shards", "0", "5", "--scene-size", "32", "256"], None, "at least 64 px on each side"),
        ([], {"lr": -1}, "lr must be a number > 0"),
        ([], {"lambda_grad": float("nan")}, "lambda_grad must be a number >= 0"),
        ([], {"highlight_clip": 2}, "highlight_clip must be a chance between 0 and 1"),
        ([], {"psf_variety": -0.5}, "psf_variety must be a chance between 0 and 1"),
        (["--steps", "-3"], {}, "steps must be a whole number >= 1, got -3"),
        (["--make-shards", "0", "-5"], None, "give a FIRST scene >= 0 and a COUNT >= 1"),
        (["--device", "tpu"], {}, 'device must be "cpu", "cuda", "cuda:N" or "auto", got \'tpu\''),
        (["--workers", "-1"], {}, "workers must be a whole number >= 0, got -1"),
        ([], {"shards": "s", "shard_recipe": [{"first": 0}]}, "shard_recipe[0]: count must be a whole number >= 1, got None"),
        ([], {"shards": "s", "shard_recipe": [{"first": 0, "count": 5, "featureless": 2}]}, "shard_recipe[0]: featureless must be a chance between 0 and 1"),
        ([], {"shards": "s", "shard_recipe": [{"first": 0, "count": 5, "size": [64, 64]}]}, "shard_recipe[0]: unknown field(s) size"),
        ([], {"shard_recipe": [{"first": 0, "count": 5}]}, "shard_recipe needs a shard folder"),
        ([], {"shards": "s", "shard_recipe": [{"first": 0, "count": 5}, {"first": 200, "count": 5, "scene_size": [384, 384]}]},
         "shard_recipe draws scenes of 192x256 and 384x384 px"),
        pytest.param(["--device", "cuda"], {}, "device 'cuda': this torch has no usable GPU",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")),
    ],
)
def test_cli_train_refuses_impossible_settings_before_writing_anything(tmp_path, capsys, args, config, message):
    cfg_args = []
    if config is not None:
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps(config))
        cfg_args = ["--config", str(path)]
    out = tmp_path / "run"
    assert main(["train", "-o", str(out)] + cfg_args + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_train_init_fine_tunes_the_given_weights(tmp_path):
    out = tmp_path / "fine-tune"
    assert main(["train", "--config", "tiny", "--steps", "1", "--init", str(WEIGHTS_PATH), "-o", str(out)]) == 0
    tuned, shipped = load_network(out / "weights.pt"), load_network(WEIGHTS_PATH)
    assert tuned.config == shipped.config  # the tiny config's own network is not built
    moved = [k for k, v in shipped.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert moved  # and trained from there
    bad = tmp_path / "not-weights.pt"
    bad.write_bytes(b"junk")
    assert main(["train", "--config", "tiny", "--init", str(bad), "-o", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_bad_weights_files_give_one_clear_error(tmp_path):
    with pytest.raises(NetworkWeightsError, match="no such weights file"):
        load_network(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(NetworkWeightsError, match="not a readable weights file"):
        load_network(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(NetworkWeightsError, match="not a dpfocus network"):
        load_network(other)
    good = export_weights(DPKernelNet(TINY), tmp_path / "good.pt")
    payload = torch.load(good, weights_only=True)
    payload["config"]["width"] = 24  # the shapes no longer match
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(NetworkWeightsError, match="do not match"):
        load_network(tmp_path / "mismatch.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(NetworkWeightsError):
        load_network(truncated)


shipped = pytest.mark.skipif(not WEIGHTS_PATH.is_file(), reason="no shipped weights")


@shipped
def test_shipped_weights_load_and_beat_the_input_on_a_bundled_sample():
    assert "network" in backends()
    pair = load_sample("garden")
    gt = load_ground_truth("garden")
    analysis = analyze(pair, backend="network")
    assert analysis.aif.shape == pair.left.shape and analysis.kernel_index.dtype == np.uint16
    assert psnr(analysis.aif, gt["aif"]) > psnr(pair.combined, gt["aif"])
    assert spearman(analysis.disparity, gt["disparity"]) > 0.8  # garden: objects at several depths
    workshop = load_sample("workshop")
    sharp = analyze(workshop, backend="network").aif
    assert psnr(sharp, load_ground_truth("workshop")["aif"]) > psnr(workshop.combined, load_ground_truth("workshop")["aif"]) + 1.0
    top = analysis.kernel_weights(100, 100)
    assert top[0][0] == analysis.kernel_index[100, 100] and sum(w for _, w in top) == pytest.approx(1.0)
    assert np.all(np.diff(analysis.kernel_cocs) > 0)


def test_the_deconvolution_shares_the_surfaces_and_leaves_depth_edges_to_the_network():
    from dpfocus.nn.backend import DECONV_JUMP_REACH, deconvolution_share

    blur = np.full((64, 96), 2.0, np.float32)
    blur[:, 48:] = 9.0  # a depth edge at x = 48
    share = deconvolution_share(blur)
    assert share[10, 10] == pytest.approx(0.7) and share[10, 90] == pytest.approx(0.3)  # small and large blur
    assert np.all(share[:, 48 - DECONV_JUMP_REACH : 48 + DECONV_JUMP_REACH] == 0)
    assert np.all(deconvolution_share(-blur) == share)  # either side of focus
    large = deconvolution_share(np.full((32, 32), 14.0, np.float32))  # fading out: its kernels' cost
    assert large[16, 16] == pytest.approx(0.15) and not deconvolution_share(np.full((32, 32), 16.0, np.float32)).any()


@shipped
def test_the_analysis_all_in_focus_image_blends_the_deconvolution_where_it_helps(monkeypatch):
    import dpfocus.nn.backend as backend

    # measured: garden 25.58 -> 25.62 dB, workshop 24.65 -> 25.14 dB (the classical image: 25.68, 25.17)
    shipped_share = backend.DECONV_SHARE
    for name, gain in (("garden", 0.0), ("workshop", 0.3)):
        pair, gt = load_sample(name), load_ground_truth(name)["aif"]
        monkeypatch.setattr(backend, "DECONV_SHARE", shipped_share)
        blended = analyze(pair, backend="network")
        share = backend.deconvolution_share(blended.blur)
        monkeypatch.setattr(backend, "DECONV_SHARE", ((np.inf, 0.0),))
        alone = analyze(pair, backend="network")
        assert 0.3 < (share > 0).mean() < 1.0  # surfaces, not their edges
        assert np.array_equal(blended.aif[share == 0], alone.aif[share == 0])
        assert psnr(blended.aif, gt) > psnr(alone.aif, gt) + gain
        assert blended.meta["timings"]["deconvolution_s"] > 0


@shipped
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_a_featureless_sky_takes_its_depth_from_the_scene_around_it(noise):
    # the garden sample's top third replaced by one flat colour in both views (an overexposed or
    # clear sky): no DP evidence there, so its disparity must stay within what the rest of the
    # scene spans (weights trained on grainy surfaces only put it at 14-16 px, the scene spanning
    # -5.7 .. 2.6 px)
    pair = load_sample("garden")
    left, right = pair.left.copy(), pair.right.copy()
    h = left.shape[0] // 3
    rng = np.random.default_rng(0)
    left[:h] = np.clip(1.0 - 0.3 * (noise > 0) + noise * rng.standard_normal(left[:h].shape), 0, 1)
    right[:h] = np.clip(1.0 - 0.3 * (noise > 0) + noise * rng.standard_normal(right[:h].shape), 0, 1)
    analysis = analyze(DPPair.from_arrays(left, right, name="sky"), backend="network")
    lo, hi = np.percentile(analysis.disparity[h + 20 :], [1, 99])
    sky = analysis.disparity[: h - 20]
    assert lo - 1.0 < float(np.median(sky)) < hi + 1.0
    assert ((sky < lo - 1.0) | (sky > hi + 1.0)).mean() < 0.1
    if noise == 0:  # nothing to match there: the confidence says so, while the rest keeps its own
        assert float(analysis.confidence[: h - 20].mean()) < 0.05 < 0.3 < float(analysis.confidence[h + 20 :].mean())


@shipped
def test_tiled_inference_matches_whole_image_inference():
    pair = load_sample("workshop")
    net = load_network()
    whole = run_network(net, pair.left, pair.right, tile=None)
    tiled = run_network(net, pair.left, pair.right, tile=384)  # 2 x 3 tiles on this 648x432 sample (padded to 704x448)
    assert psnr(tiled["aif"], whole["aif"]) >= 45  # measured 92.7 dB
    diff = np.abs(tiled["disparity"] - whole["disparity"])
    assert diff.max() < 0.1  # measured 0.06 px: the context module sees a little past the overlap
    # the matching half alone (the tiled reblur path's first pass) gives the same maps
    alone = run_network(net, pair.left, pair.right, tile=384, disparity_only=True)
    assert set(alone) == {"disparity", "confidence"}
    for name in alone:
        np.testing.assert_array_equal(alone[name], tiled[name])


@shipped
def test_padding_to_the_network_grid_keeps_the_disparity_at_the_right_border():
    pair = load_sample("garden")  # 648 px wide: padded by 56 columns to the 64 px grid
    truth = load_ground_truth("garden")["disparity"]
    disparity = run_network(load_network(), pair.left, pair.right, tile=None)["disparity"]
    assert np.abs(disparity[:, -10:] - truth[:, -10:]).mean() < 0.6  # measured 0.29 px; 1.99 with plain reflection


@shipped
def test_network_refocus_brings_the_masked_object_into_focus():
    pair = load_sample("garden")
    gt = load_ground_truth("garden")
    mask = gt["labels"] == 1
    d_trg, img = network_refocus(pair, mask)
    assert img.shape == pair.left.shape and np.isfinite(d_trg)
    # it reads the same blur map as the network's analysis, so both renderers focus at one depth
    # (measured 4e-7 px apart; 0.21 px when the reblur path averaged the raw disparity)
    assert d_trg == pytest.approx(focus_disparity(analyze(pair, backend="network"), mask=mask), abs=1e-3)
    with pytest.raises(Exception, match="non-empty"):
        network_refocus(pair, np.zeros_like(mask))


@shipped
def test_the_reblur_path_follows_the_focus_target():
    from dpfocus.scenes import SceneConfig, generate_scene

    scene = generate_scene(11, SceneConfig(height=192, width=288))
    pair = DPPair.from_arrays(scene.left, scene.right)
    objects = sorted((o for o in scene.objects if (scene.labels == o["label"]).sum() >= 400), key=lambda o: o["coc"])
    blurred, sharp = objects[0], objects[-1]  # captured 10.2 px out of focus, and in focus
    on_blurred = network_refocus(pair, scene.labels == blurred["label"])[1]
    on_sharp = network_refocus(pair, scene.labels == sharp["label"])[1]
    # each focus is rendered nearer its own ground truth than the other's (measured +4.2 and +13.7 dB;
    # when the retrieval kept its learned term the two images were the same to 0.0006)
    assert psnr(on_blurred, scene.refocused[blurred["label"]]) > psnr(on_sharp, scene.refocused[blurred["label"]]) + 1
    assert psnr(on_sharp, scene.refocused[sharp["label"]]) > psnr(on_blurred, scene.refocused[sharp["label"]]) + 1
    # and focusing on the blurred object beats leaving the photo as it is (31.0 against 26.8 dB)
    assert psnr(on_blurred, scene.refocused[blurred["label"]]) > psnr(scene.combined, scene.refocused[blurred["label"]]) + 1
    # focus kept where it was captured: the photo comes back rather than being rebuilt from the
    # all-in-focus image (measured 47.1 dB; 44.5 dB reblurred by a zero difference, 34.5 dB from the
    # all-in-focus image everywhere)
    assert psnr(on_sharp, (scene.left + scene.right) / 2) > 40


@shipped
def test_the_reblur_path_blurs_as_the_physical_psf_of_the_wanted_size():
    from dpfocus.nn.backend import _target_weights, reblur_calibration
    from dpfocus.optics import DPPSF, linear_to_srgb, srgb_to_linear
    from dpfocus.refocus import blur_by_radius

    net = load_network()
    cocs, requests = reblur_calibration(net)
    assert requests[0] == 0 and np.all(np.diff(requests) >= 0) and reblur_calibration(net) is reblur_calibration(net)
    # a sharp image the calibration never saw (it uses the garden sample's)
    sharp = load_ground_truth("gallery")["aif"][:192, :256].astype(np.float32)
    views = torch.from_numpy(np.ascontiguousarray(sharp.transpose(2, 0, 1)))[None]
    inner = (slice(24, -24), slice(24, -24))
    for coc, gain in ((-3.0, 5), (3.0, 1), (8.0, 1)):  # measured +9.1, +2.6, +2.4 dB (43.7, 43.7, 43.2 dB)
        physical = linear_to_srgb(blur_by_radius(srgb_to_linear(sharp), np.full((192, 256), abs(coc), np.float32), np.ones((192, 256), bool), DPPSF()))
        wanted = torch.full((1, 1, 48, 64), coc)
        with torch.no_grad():
            calibrated = net.reblur(views, _target_weights(net, wanted))[0].numpy().transpose(1, 2, 0).clip(0, 1)
            by_entry_cocs = net.reblur(views, net.target_weights(wanted))[0].numpy().transpose(1, 2, 0).clip(0, 1)
        assert psnr(calibrated[inner], physical[inner]) > max(40, psnr(by_entry_cocs[inner], physical[inner]) + gain)


@shipped
def test_the_tiled_reblur_path_matches_the_whole_image(monkeypatch):
    pair = load_sample("garden")
    mask = load_ground_truth("garden")["labels"] == 1
    d_whole, whole = network_refocus(pair, mask)  # 648x432: one pass on the whole image
    matched = []
    stage = DPKernelNet.disparity_stage
    monkeypatch.setattr(DPKernelNet, "disparity_stage", lambda self, *views: matched.append(1) or stage(self, *views))
    d_tiled, tiled = network_refocus(pair, mask, tile=384)  # 2 x 3 tiles, d_trg from the tiled disparity
    assert len(matched) == 6  # one per tile: the second pass reuses the first's matching (the slower part of the network)
    assert d_tiled == pytest.approx(d_whole, abs=0.02)  # measured 0.005 px
    assert psnr(tiled, whole) > 45  # measured 83 dB


@shipped
def test_the_reblur_path_renders_from_a_session_an_export_record_and_the_cli(tmp_path, capsys):
    from dpfocus.export import export_refocus
    from dpfocus.io import read_image, save_image
    from dpfocus.refocus import FocusError
    from dpfocus.session import FocusSession

    pair = load_sample("garden")
    mask = load_ground_truth("garden")["labels"] == 1
    _, expected = network_refocus(pair, mask)
    s = FocusSession(analyze(pair, backend="network"))
    s.set_mask(mask)
    layered = s.render_full()[1]
    s.set_renderer("network")
    with pytest.raises(FocusError, match="views"):
        s.render_full()
    generation, img = s.render_full(pair=pair)
    # not the layered render (measured 40.7 dB apart)
    assert generation == s.generation and np.array_equal(img, expected) and psnr(img, layered) < 50
    s.set_controls(tolerance=0.5)
    with pytest.raises(FocusError, match="no sharp band"):
        s.render_full(pair=pair)
    s.set_controls(tolerance=0.0)
    with pytest.raises(FocusError, match="unknown renderer"):
        s.set_renderer("magic")
    # an export records the renderer, and its record reproduces the image from the exported mask
    files = export_refocus(tmp_path / "export", s, mask=mask, image=img)
    assert json.loads(files["record"].read_text())["renderer"] == "network"
    assert main(["refocus", "--record", str(files["record"]), "-o", str(tmp_path / "again.png")]) == 0
    assert "network's reblur path" in capsys.readouterr().out
    assert psnr(read_image(tmp_path / "again.png")[0], img) > 60  # 16-bit quantisation apart
    # the command line: --quality network on a mask file
    save_image(tmp_path / "mask.png", mask.astype(np.float32), 8)
    left, right = str(pair.left_path), str(pair.right_path)
    assert main(["refocus", left, right, "-o", str(tmp_path / "cli.png"), "--quality", "network", "--mask", str(tmp_path / "mask.png")]) == 0
    assert psnr(read_image(tmp_path / "cli.png")[0], img) > 60
    # ... a set disparity is not a region, and the path keeps no sharp band
    assert main(["refocus", left, right, "-o", str(tmp_path / "x.png"), "--quality", "network", "--disparity", "0.5"]) == 2
    assert "not on --disparity" in capsys.readouterr().err
    assert main(["refocus", left, right, "-o", str(tmp_path / "y.png"), "--quality", "network", "--point", "100", "100", "--tolerance", "1"]) == 2
    assert "no sharp band" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()
    # a set disparity drops the mask the path needs
    s.set_disparity(0.5)
    with pytest.raises(FocusError, match="region"):
        s.render_full(pair=pair)


@shipped
def test_network_analysis_refocuses_with_the_physical_dp_psf_and_keeps_it_on_disk(tmp_path):
    import json

    from dpfocus.analysis import load_analysis, save_analysis
    from dpfocus.io import DPPairError
    from dpfocus.optics import DPPSF
    from dpfocus.refocus import analysis_psf, focus_disparity, render_refocus

    pair = load_sample("garden")
    analysis = analyze(pair, backend="network")
    assert isinstance(analysis_psf(analysis), DPPSF)  # not the learned feature-space entries
    save_analysis(analysis, tmp_path / "a")
    back = load_analysis(tmp_path / "a")
    assert isinstance(analysis_psf(back), DPPSF)
    mask = load_ground_truth("garden")["labels"] == 1
    assert psnr(render_refocus(back, focus_disparity(back, mask=mask)), render_refocus(analysis, focus_disparity(analysis, mask=mask))) > 60
    record = tmp_path / "a" / "analysis.json"
    broken = json.loads(record.read_text())
    broken["render_psf"]["split_softness"] = -1
    record.write_text(json.dumps(broken))
    with pytest.raises(DPPairError, match="analysis.json.*split_softness"):
        load_analysis(tmp_path / "a")


@shipped
def test_refocusing_a_network_analysis_blurs_like_the_scene():
    from dpfocus.io import DPPair
    from dpfocus.refocus import focus_disparity, render_refocus
    from dpfocus.scenes import SceneConfig, generate_scene

    scene = generate_scene(14, SceneConfig(height=192, width=288))  # focus in front of everything
    pair = DPPair.from_arrays(scene.left, scene.right)
    pair.combined = scene.combined
    analysis = analyze(pair, backend="network")
    obj = max(scene.objects, key=lambda o: (scene.labels == o["label"]).sum())
    target = scene.refocused[obj["label"]]
    img = render_refocus(analysis, focus_disparity(analysis, mask=scene.labels == obj["label"]))
    assert psnr(img, target) > psnr(scene.combined, target) + 2.0  # measured 38.78 against 35.24 dB


def dpdd_folder(root, n=3, h=96, w=128, split="train"):
    """A DPDD-layout folder of real-looking pairs (rendered scenes saved as 16-bit PNGs)."""
    from dpfocus.io import save_image
    from dpfocus.scenes import SceneConfig, generate_scene

    for i in range(n):
        scene = generate_scene(40 + i, SceneConfig(height=h, width=w, with_refocus=False))
        for sub, img in ((f"{split}_l/source", scene.left), (f"{split}_r/source", scene.right),
                         (f"{split}_c/source", scene.combined), (f"{split}_c/target", scene.aif)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            save_image(root / sub / f"{i:03d}.png", img)
    return root


def test_training_mixes_real_pairs_whose_depth_terms_are_left_out(tmp_path):
    from dpfocus.io import read_image
    from dpfocus.nn.data import RealPairPool

    folder = dpdd_folder(tmp_path / "dpdd")
    pool = RealPairPool(folder, seed=0, size=2, refresh=3)
    assert len(pool.pairs) == 3 and pool.smallest_side() == 96
    sampler = SceneSampler(None, seed=0, crop=64, real=pool, real_fraction=0.5)
    batch = sampler.batch(8)
    assert batch.has_depth.any() and not batch.has_depth.all()  # both kinds in one batch
    real = ~batch.has_depth
    assert np.all(batch.disparity[real] == 0) and np.all(batch.J[real] == 0)
    # a real crop's sharp target is the pair's own target file, cropped (up to the sampler's flips)
    targets = [read_image(folder / "train_c" / "target" / f"{i:03d}.png")[0] for i in range(3)]
    crop = batch.aif[real][0].transpose(1, 2, 0)
    variants = [crop, crop[:, ::-1], crop[::-1], crop[::-1, ::-1]]
    assert any(np.abs(t[y : y + 64, x : x + 64] - v).max() < 1e-4 for t in targets for v in variants
               for y in range(0, 33) for x in range(0, 65))
    # the loss: synthetic crops alone set the depth terms; real ones only deblur and reblur
    torch.manual_seed(0)
    net = DPKernelNet(TINY)
    cfg = TrainConfig(batch=8, crop=64, net=TINY.to_dict())
    mixed = losses(net, batch, cfg)
    from dataclasses import replace

    synthetic_only = replace(batch, **{k: getattr(batch, k)[~real] for k in ("left", "right", "aif", "combined", "disparity", "coc", "J", "has_depth")})
    alone = losses(net, synthetic_only, cfg)
    for term in ("coc", "coc_grad", "disparity"):
        assert float(mixed[term].detach()) == pytest.approx(float(alone[term].detach()), rel=1e-4)
    all_real = replace(batch, **{k: getattr(batch, k)[real] for k in ("left", "right", "aif", "combined", "disparity", "coc", "J", "has_depth")})
    only_real = losses(net, all_real, cfg)
    assert float(only_real["coc"].detach()) == 0 and float(only_real["disparity"].detach()) == 0 and float(only_real["deblur"].detach()) > 0
    # the pool swaps pairs as it goes, and its state resumes exactly
    state = pool.state()
    again = RealPairPool(folder, seed=5, size=2, refresh=3)
    again.set_state(state)
    for _ in range(7):
        a, b = pool.scene(), again.scene()
        np.testing.assert_array_equal(a["aif"], b["aif"])


def test_cli_train_with_a_dpdd_folder(tmp_path, capsys):
    folder = dpdd_folder(tmp_path / "dpdd")
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--dpdd", str(folder), "--dpdd-fraction", "1", "-o", str(out)]) == 0
    assert "3 real pairs with sharp targets" in capsys.readouterr().out
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    header = rows[0].split(",")
    for row in rows[1:]:  # every crop was real: no depth terms, a deblur term
        values = dict(zip(header, row.split(",")))
        assert float(values["coc"]) == 0 and float(values["disparity"]) == 0 and float(values["deblur"]) > 0
    assert json.loads((out / "config.json").read_text())["dpdd"] == str(folder)
    assert main(["train", "--config", "tiny", "--dpdd", str(folder), "--steps", "6", "-o", str(out)]) == 0  # resumes
    load_network(out / "weights.pt")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dpdd", "{tmp}/missing"], "missing: not a folder"),
        (["--dpdd", "{tmp}/empty"], "no dual-pixel pairs with a sharp target"),
        (["--dpdd", "{tmp}/dpdd", "--dpdd-fraction", "2"], "dpdd_fraction must be a chance between 0 and 1"),
        (["--dpdd-fraction", "0.3"], "--dpdd-fraction needs real pairs"),
    ],
)
def test_cli_train_refuses_a_bad_dpdd_folder(tmp_path, capsys, args, message):
    dpdd_folder(tmp_path / "dpdd", n=1)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "-o", str(out)] + [a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@shipped
def test_the_network_blur_map_gives_a_blurred_foreground_its_spill():
    from scipy import ndimage

    from dpfocus.io import DPPair
    from dpfocus.refocus import focus_disparity, render_refocus
    from dpfocus.scenes import SceneConfig, generate_scene

    scene = generate_scene(11, SceneConfig(height=192, width=288))  # object 1: CoC -9 px before a +12 px wall
    pair = DPPair.from_arrays(scene.left, scene.right)
    pair.combined = scene.combined
    analysis = analyze(pair, backend="network")
    mask = scene.labels == 1
    rim = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask) & (scene.labels == 0)
    assert rim.sum() > 100
    # just outside the object the photo shows its blur, and the blur map says so; the CoC map
    # keeps the wall there
    assert np.median(analysis.blur[rim]) < -6.0 and np.median(analysis.coc[rim]) > 8.0
    far = ~ndimage.binary_dilation(scene.labels > 0, iterations=12)
    np.testing.assert_array_equal(analysis.blur[far] <= analysis.coc[far] + 1.0, True)
    target = scene.refocused[1]
    img = render_refocus(analysis, focus_disparity(analysis, mask=mask))
    assert psnr(img, target) > psnr(scene.combined, target) + 3.0
