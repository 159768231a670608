"""Prompt masks with optional models: a tiny random SAM built from segment-anything's own modules,
a stand-in CLIP ranker (OpenCLIP itself only where it is installed), env-var fallbacks and the CLI."""

import sys

import numpy as np
import pytest
import torch

from dpfocus import prompts
from dpfocus.analysis import analyze
from dpfocus.cli import main as cli_main
from dpfocus.io import save_image
from dpfocus.prompts import (
    CLIP_ENV,
    CLIP_MODEL_ENV,
    SAM_ENV,
    PromptModelError,
    SamSegmenter,
    configured_clip,
    configured_sam,
    load_clip,
    load_sam,
    mask_from_box,
    mask_from_points,
    mask_from_text,
    sam_config_from_state_dict,
)
from dpfocus.refocus import FocusError
from dpfocus.samples import load_ground_truth, load_sample
from dpfocus.scenes import SceneConfig, generate_scene

from conftest import TINY_SAM as TINY



@pytest.fixture(autouse=True)
def no_model_env(monkeypatch):
    for name in (SAM_ENV, CLIP_ENV, CLIP_MODEL_ENV):
        monkeypatch.delenv(name, raising=False)
    prompts._CONFIGURED.clear()


@pytest.fixture(scope="module")
def garden():
    return analyze(load_sample("garden"))


@pytest.fixture(scope="module")
def sam(tiny_ckpt):
    return load_sam(tiny_ckpt)


def count_encoder_calls(seg: SamSegmenter) -> list:
    calls = []
    seg.model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


# -- SAM loading ------------------------------------------------------------------------------------


def test_load_sam_reads_a_tiny_architecture_from_the_weights(sam, tiny_model, tiny_ckpt, garden):
    assert sam.config == TINY and sam.config.name == "custom"
    assert str(tiny_ckpt) in sam.describe()
    # the loaded model computes what the saved one did
    reference = SamSegmenter(tiny_model)
    for seg in (sam, reference):
        seg.set_image(garden)
    np.testing.assert_array_equal(sam.points([(200, 300)]), reference.points([(200, 300)]))
    np.testing.assert_array_equal(sam.box(100, 80, 380, 300), reference.box(100, 80, 380, 300))


@pytest.mark.parametrize(
    "name,embed,depth,heads,global_idx",
    [("vit_b", 768, 12, 12, (2, 5, 8, 11)), ("vit_l", 1024, 24, 16, (5, 11, 17, 23)), ("vit_h", 1280, 32, 16, (7, 15, 23, 31))],
)
def test_official_architectures_are_read_from_their_weights(name, embed, depth, heads, global_idx):
    sa = prompts._segment_anything()
    with torch.device("meta"):  # shapes only: no memory, no init
        official = sa.sam_model_registry[name]()
        cfg = sam_config_from_state_dict(official.state_dict())
        rebuilt = cfg.build()
    assert (cfg.name, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.global_attn_indexes) == (name, embed, depth, heads, global_idx)
    assert (cfg.img_size, cfg.patch_size, cfg.window_size, cfg.out_chans, cfg.prompt_embed_dim) == (1024, 16, 14, 256, 256)
    assert (cfg.decoder_depth, cfg.decoder_mlp_dim, cfg.decoder_num_heads, cfg.iou_head_depth, cfg.num_multimask_outputs) == (2, 2048, 8, 3, 3)
    shapes = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes


def test_segment_anything_imports_without_leaving_a_torchvision_behind():
    prompts._segment_anything()
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert "torchvision" not in sys.modules


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"\x00garbage, not a checkpoint" * 10), "not a readable PyTorch checkpoint"),
        (lambda p: torch.save(torch.nn.Linear(3, 3).state_dict(), p), "does not hold Segment Anything weights"),
        (lambda p: torch.save(torch.zeros(3), p), "holds no model weights"),
        (lambda p: p.mkdir(), "is not a file"),
    ],
    ids=["missing", "garbage", "unrelated", "tensor", "folder"],
)
def test_bad_sam_checkpoints_raise_one_clear_line(tmp_path, make, message):
    path = tmp_path / "sam.pth"
    make(path)
    with pytest.raises(PromptModelError, match=message) as info:
        load_sam(path)
    assert isinstance(info.value, FocusError) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_or_mismatched_sam_weights_raise(tmp_path, tiny_ckpt, tiny_model):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny_ckpt.read_bytes()[:5000])
    with pytest.raises(PromptModelError, match="cut.pth"):
        load_sam(cut)
    sd = dict(tiny_model.state_dict())
    sd.pop("mask_decoder.output_upscaling.0.weight")
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(PromptModelError, match="do not fit a SAM model"):
        load_sam(tmp_path / "partial.pth")


# -- SAM prompts ------------------------------------------------------------------------------------


def test_points_and_box_give_boolean_masks_of_the_image_shape(sam, garden):
    for mask in (
        mask_from_points(garden, [(200, 300)], sam=sam),
        mask_from_points(garden, [(200, 300), (150, 250)], [(20, 20)], sam=sam),
        mask_from_box(garden, (123, 89, 361, 267), sam=sam),
        sam.points([(10.5, 600.2)], image=garden),
    ):
        assert mask.dtype == bool and mask.shape == garden.shape and mask.any()
    with pytest.raises(FocusError, match="outside"):
        mask_from_points(garden, [(900, 10)], sam=sam)
    with pytest.raises(FocusError, match="covers no pixel"):
        mask_from_box(garden, (700, 500, 800, 600), sam=sam)
    with pytest.raises(FocusError, match="positive"):
        mask_from_points(garden, [], sam=sam)


def test_image_embeddings_are_cached_by_image(tiny_ckpt, garden):
    seg = load_sam(tiny_ckpt, cache_size=2)
    calls = count_encoder_calls(seg)
    a = garden.aif
    b, c = np.ascontiguousarray(a[::-1]), np.ascontiguousarray(a[:, ::-1])
    seg.points([(200, 300)], image=garden)
    seg.points([(100, 100)], image=garden)
    seg.box(10, 10, 200, 200, image=garden)
    mask_from_points(garden, [(50, 60)], sam=seg)
    assert len(calls) == 1 and seg.encoder_calls == 1
    seg.points([(200, 300)], image=b)
    seg.points([(200, 300)], image=a.copy())  # same pixels, another array: cached
    assert len(calls) == 2
    seg.points([(200, 300)], image=c)  # evicts b (a was used more recently)
    seg.points([(200, 300)], image=a)
    assert len(calls) == 3
    seg.points([(200, 300)], image=b)
    assert len(calls) == 4 and seg.encoder_calls == 4


def test_grey_images_go_to_sam_as_uint8_rgb(sam, garden):
    grey = garden.aif.mean(axis=2)
    rgb = prompts._to_uint8_rgb(grey)
    assert rgb.dtype == np.uint8 and rgb.shape == grey.shape + (3,) and (rgb[..., 0] == rgb[..., 2]).all()
    assert prompts._to_uint8_rgb(garden).shape == garden.shape + (3,)
    mask = sam.points([(100, 100)], image=grey)
    assert mask.shape == grey.shape and mask.dtype == bool


def test_proposals_return_candidate_masks(sam, garden):
    regions = sam.proposals(max_regions=5, image=garden, points_per_side=8)
    assert 1 <= len(regions) <= 5
    for m in regions:
        assert m.dtype == bool and m.shape == garden.shape and m.any()


def test_configured_sam_uses_the_env_var_and_falls_back_with_a_message(monkeypatch, tmp_path, tiny_ckpt):
    assert configured_sam() == (None, None)
    (tmp_path / "bad.pth").write_bytes(b"nope")
    monkeypatch.setenv(SAM_ENV, str(tmp_path / "bad.pth"))
    seg, message = configured_sam()
    assert seg is None and SAM_ENV in message and "bad.pth" in message and "fell back to the default segmentation" in message
    monkeypatch.setenv(SAM_ENV, str(tmp_path / "missing.pth"))
    assert configured_sam().model is None and "not found" in configured_sam().message
    monkeypatch.setenv(SAM_ENV, str(tiny_ckpt))
    found = configured_sam()
    assert isinstance(found.model, SamSegmenter) and "Segment Anything" in found.message
    assert configured_sam().model is found.model  # loaded once


# -- text -------------------------------------------------------------------------------------------


class ColourRanker:
    """Stand-in for CLIP: scores crops by closeness of their (non-grey) mean colour to a target."""

    def __init__(self, colour):
        self.colour = np.asarray(colour, np.float32)
        self.calls = []

    def similarity(self, crops, text):
        self.calls.append((len(crops), text))
        scores = []
        for c in crops:
            assert c.dtype == np.float32 and c.ndim == 3 and c.shape[0] == c.shape[1] and c.shape[2] == 3
            assert 0 <= c.min() and c.max() <= 1
            inside = np.abs(c - 0.5).max(axis=2) > 1e-6
            scores.append(-np.linalg.norm(c[inside].mean(axis=0) - self.colour) if inside.any() else -9.0)
        return np.array(scores)


def test_vocabulary_text_still_works_and_unknown_phrases_explain(garden):
    mask = mask_from_text(garden, "nearest object")
    assert mask.dtype == bool and mask.shape == garden.shape and mask.any()
    with pytest.raises(FocusError, match="text prompts know only") as info:
        mask_from_text(garden, "purple elephant")
    assert CLIP_ENV in str(info.value)


def test_clip_ranks_the_default_regions(garden):
    gt = load_ground_truth("garden")
    target = gt["labels"] == 2
    ranker = ColourRanker(gt["aif"][target].mean(axis=0))
    mask = mask_from_text(garden, "the big teapot", clip=ranker)
    assert ranker.calls and ranker.calls[0][1] == "the big teapot"
    assert (mask & target).sum() > 0.5 * mask.sum()
    # depth/position phrases keep the depth-aware vocabulary (CLIP cannot see depth)
    calls = len(ranker.calls)
    np.testing.assert_array_equal(mask_from_text(garden, "nearest object", clip=ranker), mask_from_text(garden, "nearest object"))
    assert len(ranker.calls) == calls


def test_clip_ranks_sam_proposals(sam, garden):
    ranker = ColourRanker([0.9, 0.2, 0.2])
    mask = mask_from_text(garden, "a red flower", sam=sam, clip=ranker)
    assert mask.dtype == bool and mask.shape == garden.shape and mask.any()
    assert 1 <= ranker.calls[-1][0] <= 32


def test_load_clip_without_open_clip_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import fails as if not installed
    path = tmp_path / "clip.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(PromptModelError, match="pip install open_clip_torch"):
        load_clip(path)
    with pytest.raises(PromptModelError, match="not found"):
        load_clip(tmp_path / "missing.pt")
    monkeypatch.setenv(CLIP_ENV, str(path))
    ranker, message = configured_clip()
    assert ranker is None and "open_clip_torch" in message and "fell back" in message


class FakeClip(torch.nn.Module):
    """A tiny model with OpenCLIP's state-dict layout (ViT-ish keys), for the loader's logic."""

    def __init__(self, width=16, embed=8, patch=8, size=32, layers=2, ctx=77, vocab=300):
        super().__init__()
        v, t = torch.nn.Module(), torch.nn.Module()
        v.conv1 = torch.nn.Conv2d(3, width, patch, patch, bias=False)
        v.positional_embedding = torch.nn.Parameter(torch.randn((size // patch) ** 2 + 1, width))
        v.proj = torch.nn.Parameter(torch.randn(width, embed))
        v.transformer = torch.nn.Module()
        v.transformer.resblocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
        v.image_size = size
        self.visual = v
        self.token_embedding = torch.nn.Embedding(vocab, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(ctx, width))
        self.transformer = t
        t.resblocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
        self.text_projection = torch.nn.Parameter(torch.randn(width, embed))
        self.logit_scale = torch.nn.Parameter(torch.ones([]))

    def encode_image(self, x):
        return self.visual.conv1(x).mean((2, 3)) @ self.visual.proj

    def encode_text(self, tokens):
        return self.token_embedding(tokens).mean(1) @ self.text_projection


def fake_open_clip():
    import types

    configs = {
        "Fake-B-8": {"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "patch_size": 8},
                     "text_cfg": {"context_length": 77, "vocab_size": 300, "width": 16, "layers": 2}},
        "Fake-B-8-quickgelu": {"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "patch_size": 8},
                               "text_cfg": {"context_length": 77, "vocab_size": 300, "width": 16, "layers": 2}},
        "Fake-L": {"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 4, "width": 16, "patch_size": 8},
                   "text_cfg": {"context_length": 77, "vocab_size": 300, "width": 16, "layers": 2}},
    }

    def tokenizer(texts):
        return torch.tensor([[ord(c) % 300 for c in t[:77].ljust(77)] for t in texts])

    def create_model(name, pretrained=None):
        if name not in configs:
            raise RuntimeError(f"Model config for {name} not found.")
        return FakeClip(layers=configs[name]["vision_cfg"]["layers"])

    return types.SimpleNamespace(
        list_models=lambda: list(configs), get_model_config=lambda n: configs.get(n), create_model=create_model,
        get_tokenizer=lambda n: tokenizer, OPENAI_DATASET_MEAN=(0.48, 0.46, 0.41), OPENAI_DATASET_STD=(0.27, 0.26, 0.28),
    )


def test_clip_loader_matches_the_architecture_and_ranks_crops(monkeypatch, tmp_path, garden):
    monkeypatch.setitem(sys.modules, "open_clip", fake_open_clip())
    torch.manual_seed(0)
    torch.save(FakeClip().state_dict(), tmp_path / "clip.bin")
    ranker = load_clip(tmp_path / "clip.bin")
    assert ranker.name == "Fake-B-8" and ranker.image_size == 32 and "clip.bin" in ranker.describe()
    scores = ranker.similarity([garden.aif[:50, :80], garden.aif[100:200, 100:150]], "a teapot")
    assert scores.shape == (2,) and np.isfinite(scores).all() and np.all(np.abs(scores) <= 1 + 1e-5)
    mask = mask_from_text(garden, "a teapot", clip=ranker)
    assert mask.dtype == bool and mask.shape == garden.shape and mask.any()
    with pytest.raises(PromptModelError, match="do not fit OpenCLIP Fake-L"):
        load_clip(tmp_path / "clip.bin", "Fake-L")
    with pytest.raises(PromptModelError, match="unknown OpenCLIP model 'Nope'"):
        load_clip(tmp_path / "clip.bin", "Nope")
    torch.save(FakeClip(width=24).state_dict(), tmp_path / "other.bin")
    with pytest.raises(PromptModelError, match=CLIP_MODEL_ENV):
        load_clip(tmp_path / "other.bin")
    monkeypatch.setenv(CLIP_ENV, str(tmp_path / "clip.bin"))
    found = configured_clip()
    assert isinstance(found.model, prompts.ClipRanker) and "OpenCLIP Fake-B-8" in found.message


def test_open_clip_checkpoint_loads_and_ranks(tmp_path, garden):
    open_clip = pytest.importorskip("open_clip")
    import json

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "dpfocus-tiny-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "dpfocus-tiny-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("dpfocus-tiny-test", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    ranker = load_clip(tmp_path / "clip.pt")
    assert ranker.name == "dpfocus-tiny-test" and ranker.image_size == 64
    scores = ranker.similarity([garden.aif[:50, :80], garden.aif[100:200, 100:150]], "a teapot")
    assert scores.shape == (2,) and np.isfinite(scores).all()
    mask = mask_from_text(garden, "a teapot", clip=ranker)
    assert mask.shape == garden.shape and mask.any()
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(PromptModelError, match="bad.pt"):
        load_clip(tmp_path / "bad.pt")


# -- CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    scene = generate_scene(5, SceneConfig(height=120, width=180, n_objects=(2, 3), with_refocus=False, focus="on"))
    save_image(folder / "s_L.png", scene.left)
    save_image(folder / "s_R.png", scene.right)
    return folder / "s_L.png"


def run_cli(capsys, *args):
    code = cli_main(["refocus", *map(str, args), "--quality", "preview"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_text_prompt_writes_the_refocused_image(small_pair, tmp_path, capsys):
    code, out, err = run_cli(capsys, small_pair, "-o", tmp_path / "near.png", "--text", "nearest object")
    assert code == 0 and (tmp_path / "near.png").exists() and "refocused at" in out, err
    code, _, err = run_cli(capsys, small_pair, "-o", tmp_path / "cat.png", "--text", "purple elephant")
    assert code == 2 and not (tmp_path / "cat.png").exists()
    assert "purple elephant" in err and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run_cli(capsys, small_pair, "-o", tmp_path / "e.png", "--text", "  ")
    assert code == 2 and "--text is empty" in err


def test_cli_sam_point_and_box(small_pair, tmp_path, tiny_ckpt, capsys):
    code, out, err = run_cli(capsys, small_pair, "-o", tmp_path / "p.png", "--sam", tiny_ckpt, "--point", 90, 60)
    assert code == 0 and (tmp_path / "p.png").exists(), err
    code, out, err = run_cli(capsys, small_pair, "-o", tmp_path / "b.png", "--sam", tiny_ckpt, "--box", 20, 20, 120, 100)
    assert code == 0 and (tmp_path / "b.png").exists(), err


def test_cli_bad_checkpoints_exit_2_before_analysis(small_pair, tmp_path, capsys, monkeypatch):
    import dpfocus.cli

    monkeypatch.setattr(dpfocus.cli, "_analyze", lambda *a: pytest.fail("analysis ran before the checkpoint was checked"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    code, _, err = run_cli(capsys, small_pair, "-o", tmp_path / "o.png", "--sam", tmp_path / "junk.pth", "--point", 5, 5)
    assert code == 2 and "junk.pth" in err and err.count("\n") == 1 and not (tmp_path / "o.png").exists()
    monkeypatch.setitem(sys.modules, "open_clip", None)
    code, _, err = run_cli(capsys, small_pair, "-o", tmp_path / "o.png", "--clip", tmp_path / "junk.pth", "--text", "a red ball")
    assert code == 2 and "open_clip_torch" in err and not (tmp_path / "o.png").exists()


def test_cli_bad_env_checkpoint_falls_back_with_a_note(small_pair, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(SAM_ENV, str(tmp_path / "nowhere.pth"))
    code, out, err = run_cli(capsys, small_pair, "-o", tmp_path / "o.png", "--point", 90, 60)
    assert code == 0 and (tmp_path / "o.png").exists()
    assert "fell back to the default segmentation" in err and "Traceback" not in err


def test_a_click_does_not_drift_into_a_touching_surface_at_its_depth():
    """An object beside a surface at the same depth whose colour ramps away from the object's: each
    neighbour looks like the last, so growing by neighbour colour alone walks across the ramp."""
    from dpfocus.analysis import Analysis
    from dpfocus.prompts import mask_from_points

    h, w = 80, 240
    aif = np.zeros((h, w, 3), np.float32)
    aif[:, :80] = (0.8, 0.1, 0.1)  # the object
    ramp = np.linspace(0.0, 1.0, w - 80, dtype=np.float32)[None, :, None]
    aif[:, 80:] = (1 - ramp) * np.array([0.7, 0.15, 0.15], np.float32) + ramp * np.array([0.1, 0.2, 0.9], np.float32)
    disparity = np.zeros((h, w), np.float32)
    zeros = np.zeros((h, w), np.float32)
    bank = np.ones((1, 1, 1), np.float32)
    a = Analysis(disparity, zeros + 1, zeros, zeros.astype(np.uint16), np.zeros(1, np.float32), bank, bank, aif, 1.2, "synthetic")
    mask = mask_from_points(a, [(40.0, 40.0)])
    assert mask[:, :80].mean() > 0.9  # the object
    assert mask[:, 160:].mean() < 0.05  # not the far end of the ramp, where the surface is blue
