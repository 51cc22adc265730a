"""CLIP models as backbones: tokens, offline lookup (HF cache layout, open_clip's cache), own configs and
checkpoints, the image tower as the backbone, zero-shot prompts, and every bad input with its message."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from harness.backbones.registry import BackboneUnsupported, UnknownBackbone
from harness.backbones.weights import UnknownWeights, WeightsMismatch, WeightsRef, WeightsUnavailable, locate, parse_backbone
from harness.errors import SettingError
from tests.test_weights import offline  # noqa: F401  (a fixture: empty caches, HF offline, sockets refused)

open_clip = pytest.importorskip("open_clip")

# A CLIP small enough to build in a second: resnet10t image tower, one 32-wide text layer, 16-dim embedding.
TINY = {"embed_dim": 16,
        "vision_cfg": {"timm_model_name": "resnet10t", "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear", "image_size": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
SIDE = 32


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny CLIP's state dict with every float tensor drawn from U[0, 1): unlike any fresh init."""
    from open_clip.model import CLIP

    gen = torch.Generator().manual_seed(seed)
    state = CLIP(**json.loads(json.dumps(TINY))).state_dict()
    return {k: torch.rand(v.shape, generator=gen) if v.is_floating_point() else v.clone() for k, v in state.items()}


def hf_repo(root: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """``files`` written as huggingface_hub writes a download (blobs by sha256, snapshot links, refs/main)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / sha).write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..", "..", "blobs", sha))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def _bin(state: dict[str, torch.Tensor], path: Path) -> bytes:
    torch.save(state, path)
    return path.read_bytes()


@pytest.mark.parametrize(("token", "ref", "name"), [
    ("clip:ViT-B-32", WeightsRef("clip:ViT-B-32"), "clip:ViT-B-32"),
    ("clip:ViT-B-32/laion2b_s34b_b79k", WeightsRef("clip:ViT-B-32", tag="laion2b_s34b_b79k"), "clip:ViT-B-32/laion2b_s34b_b79k"),
    ("clip:convnextv2_tiny", WeightsRef("clip:convnextv2_tiny"), "clip:convnextv2_tiny"),
    ("clip:hf-hub:org/tiny", WeightsRef("clip:hf-hub:org/tiny", tag="hf-hub"), "clip:hf-hub:org/tiny"),
])
def test_good_tokens(token: str, ref: WeightsRef, name: str) -> None:
    assert parse_backbone(token) == ref and ref.name == name


def test_families_follow_the_image_tower() -> None:
    from harness.backbones.factory import backbone_entry

    assert [backbone_entry(n).family for n in ("clip:ViT-B-32", "clip:RN50", "clip:convnextv2_tiny", "clip:deit_small_patch16_224")] == \
        ["transformer", "cnn", "cnn", "transformer"]


@pytest.mark.parametrize(("token", "error", "message"), [
    ("clip:ViT-B-23", UnknownBackbone, "unknown CLIP model 'ViT-B-23' (did you mean ViT-B-32, ViT-S-32, ViT-M-32?); valid: an open_clip model"),
    ("clip:ViT-B-32/laion2b_s34b", UnknownWeights, "unknown pretrained tag 'ViT-B-32/laion2b_s34b' (did you mean laion2b_s34b_b79k, laion2b_e16?); "
                                                   "open_clip lists 22 tags for ViT-B-32: openai, "),
    ("clip:convnextv3_tiny", UnknownBackbone, "unknown CLIP model 'convnextv3_tiny' (did you mean convnextv2_tiny, convnext_tiny, convnext_tiny_hnf?)"),
    ("clip:resnet18/openai", UnknownWeights, "resnet18 is a timm image tower with ViT-B-32's text tower, and open_clip has no tags for it"),
    ("clip:hf-hub:just-a-name", UnknownWeights, "write clip:hf-hub:ORG/NAME"),
    ("clip:ViT-B-32@/no/such.pt", UnknownWeights, "no checkpoint file /no/such.pt"),
])
def test_bad_tokens(token: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        parse_backbone(token)
    assert message in str(info.value)


def test_an_absent_tag_is_unavailable_naming_the_fetch_command(offline: tuple[Path, Path]) -> None:  # noqa: F811
    with pytest.raises(WeightsUnavailable) as info:
        locate(parse_backbone("clip:ViT-B-32/laion2b_s34b_b79k"))
    assert str(info.value) == (
        f"clip:ViT-B-32/laion2b_s34b_b79k: not cached; looked in {offline[0]}/models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K "
        "(open_clip_model.safetensors, open_clip_pytorch_model.safetensors, open_clip_pytorch_model.bin); "
        "fetch: python -m harness weights --download clip:ViT-B-32/laion2b_s34b_b79k")
    # A url-only tag is looked for in open_clip's own download cache too.
    with pytest.raises(WeightsUnavailable, match=r"\.cache/clip/vit_b_32-quickgelu-laion400m_e31-d867053b\.pt"):
        locate(parse_backbone("clip:ViT-B-32/laion400m_e31"))


@pytest.mark.parametrize("weights_file", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_a_hf_hub_model_loads_from_the_hf_cache_offline(offline: tuple[Path, Path], tmp_path: Path, weights_file: str) -> None:  # noqa: F811
    from safetensors.torch import save

    from harness.backbones.factory import create_model

    state = tiny_state()
    data = save(state) if weights_file.endswith(".safetensors") else _bin(state, tmp_path / "w.bin")
    config = json.dumps({"model_cfg": TINY, "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}}).encode()
    hf_repo(offline[0], "org/tiny", {"open_clip_config.json": config, weights_file: data})
    ref = parse_backbone("clip:hf-hub:org/tiny")
    model, resolved = create_model(ref, num_classes=0, img_size=SIDE)
    assert resolved is not None and resolved.source == "hf-cache" and resolved.sha256 == hashlib.sha256(data).hexdigest()
    loaded = model.state_dict()
    assert all(torch.equal(loaded[f"visual.{k[len('visual.'):]}"], v) for k, v in state.items() if k.startswith("visual."))
    assert model(torch.zeros(2, 3, SIDE, SIDE)).shape == (2, 16)  # the image tower: the image embedding
    from harness.backbones.weights import preprocess_of

    assert preprocess_of(ref).mean == (0.1, 0.2, 0.3) and preprocess_of(ref).input_size == SIDE


def test_a_tag_loads_from_the_hf_cache_offline(offline: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """An open_clip tag (here a tiny model's, registered for the test) reads the repo its pretrained cfg names."""
    from open_clip import pretrained

    from harness.backbones.factory import create_model

    (tmp_path / "tinyclip_test.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "tinyclip_test.json")
    monkeypatch.setitem(pretrained._PRETRAINED, "tinyclip_test", {"tiny": pretrained._pcfg(hf_hub="org/tinyclip/")})
    data = _bin(tiny_state(1), tmp_path / "w.bin")
    hf_repo(offline[0], "org/tinyclip", {"open_clip_pytorch_model.bin": data})
    _, resolved = create_model(parse_backbone("clip:tinyclip_test/tiny"), num_classes=0, img_size=SIDE)
    assert resolved is not None and resolved.source == "hf-cache" and resolved.path.name == "open_clip_pytorch_model.bin"


def test_an_own_config_and_checkpoint(tmp_path: Path) -> None:
    from harness.backbones.factory import create_model, resolve_backbones

    config, checkpoint = tmp_path / "mini_clip.json", tmp_path / "mini_clip.pt"
    config.write_text(json.dumps(TINY))
    torch.save({"epoch": 3, "state_dict": tiny_state()}, checkpoint)
    [token] = resolve_backbones([f"clip:{config}@{checkpoint}"])
    assert token == f"clip:{config}@{checkpoint}"
    ref = parse_backbone(token)
    assert ref == WeightsRef("clip:mini_clip", file=checkpoint) and ref.name == "clip:mini_clip@mini_clip"
    model, resolved = create_model(ref, num_classes=0, img_size=SIDE)
    assert resolved is not None and resolved.source == "file"
    # Another architecture's checkpoint is refused before any case runs, counted.
    with pytest.raises(WeightsMismatch, match=r"does not fit clip:ViT-B-32: \d+ missing keys"):
        resolve_backbones([f"clip:ViT-B-32@{checkpoint}"])


def test_the_seed_study_pair_is_one_name_each() -> None:
    from harness.backbones.factory import create_backbone

    tower = create_backbone("clip:convnextv2_tiny", num_classes=0, img_size=SIDE)
    assert tower(torch.zeros(1, 3, SIDE, SIDE)).shape == (1, 512)  # ViT-B-32's embedding width
    assert type(tower.visual).__name__ == "TimmModel"


# --- zero-shot prompts ------------------------------------------------------------------------

def test_zero_shot_classifier_is_the_normalised_mean_of_normalised_prompts() -> None:
    from harness.data.prompts import PromptSet
    from harness.protocols.zeroshot import text_classifier, zeroshot_logits

    class Text(torch.nn.Module):
        def encode_text(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
            out = tokens.float()
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    prompts = PromptSet(("a", "b"), ("{}", "x {}"), "builtin:t", "builtin:t")
    vectors = {"a": [3.0, 0.0], "x a": [0.0, 2.0], "b": [0.0, -1.0], "x b": [0.0, -5.0]}
    classifier = text_classifier(Text(), lambda texts: torch.tensor([vectors[t] for t in texts]), prompts, torch.device("cpu"))
    half = 2 ** -0.5
    assert torch.allclose(classifier, torch.tensor([[half, 0.0], [half, -1.0]]))
    assert torch.allclose(zeroshot_logits(torch.tensor([[0.0, 7.0]]), classifier, 100.0), torch.tensor([[100 * half, -100.0]]))


def test_built_in_prompt_sets() -> None:
    from harness.data.prompts import prompt_set

    digits = prompt_set("digits", [str(d) for d in range(10)], None, None)
    assert digits.prompts("seven")[0] == "a photo of the digit seven." and len(digits.templates) == 6
    cifar = prompt_set("cifar100", ["c"] * 100, None, None)
    assert len(cifar.templates) == 18 and cifar.classnames[1] == "aquarium fish" and cifar.setting == \
        "zeroshot classnames=builtin:cifar100 templates=builtin:cifar100"
    own = prompt_set("imagefolder:/x", ["red_bin", "blue_bin"], None, None)
    assert own.classnames == ("red bin", "blue bin") and own.templates == ("a photo of a {}.",)


def test_a_class_names_file_with_the_wrong_count(tmp_path: Path) -> None:
    from harness.config.options import default_settings
    from harness.data.prompts import PromptError, prompt_set

    names = tmp_path / "names.txt"
    names.write_text("zero\none\ntwo\n")
    with pytest.raises(PromptError, match=r"--classnames .*names.txt: 3 class names for 10 classes of digits; write one name a line, in label order"):
        prompt_set("digits", [str(d) for d in range(10)], names, None)
    from harness.config.preflight import check_available

    settings = default_settings(classnames=names, protocols=["zeroshot"], datasets=["digits"], devices=["cpu"])
    with pytest.raises(SettingError, match="3 class names for the 10 classes of digits"):
        check_available(settings)


def test_a_templates_file_without_braces(tmp_path: Path) -> None:
    from harness.config.parsers import templates_file

    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\n# a comment\na photo of a thing.\n")
    with pytest.raises(SettingError, match=r"template 'a photo of a thing.' needs exactly one \{\} where the class name goes"):
        templates_file(str(templates))
    templates.write_text("a photo of a {}.\n")
    assert templates_file(str(templates)) == templates


def test_zeroshot_on_a_backbone_without_a_text_tower_is_a_skip_naming_the_fix() -> None:
    from harness.config.options import default_settings
    from harness.kinds.train import cases

    settings = default_settings(backbones=["resnet18", "clip:ViT-B-32"], protocols=["zeroshot", "finetune"], datasets=["digits"],
                                subsets=["100"], devices=["cpu"], train_batch_sizes=[128])
    skips = {case.spec.id: case.skip for case in cases(settings)}
    assert skips["resnet18-digits_100-zeroshot-cpu-bs128-32px-fp32"] == (
        "zeroshot needs a text tower and resnet18 is an image backbone: name a CLIP model in --backbones "
        "(clip:ViT-B-32/laion2b_s34b_b79k, clip:hf-hub:ORG/NAME or clip:CONFIG.json@CHECKPOINT)")
    assert skips["clip:ViT-B-32-digits_100-zeroshot-cpu-bs128-32px-fp32"] is None  # random weights: the chance baseline
    assert skips["clip:ViT-B-32-digits_100-finetune-cpu-bs128-32px-fp32"] == (
        "finetune starts from pretrained weights and clip:ViT-B-32 names none: name an open_clip tag (e.g. clip:ViT-B-32/openai) "
        "or a checkpoint file (clip:ViT-B-32@PATH) in --backbones; scratch is the random-weights case")
    with pytest.raises(BackboneUnsupported, match="zeroshot needs a text tower"):
        from harness.protocols.zeroshot import run

        run(next(c.spec for c in cases(settings) if c.spec.backbone == "resnet18"), settings, None, None, None, None)  # type: ignore[arg-type]


def test_an_open_clip_vit_counts_its_attention_projections() -> None:
    """nn.MultiheadAttention's fused eval path hides its projections from fvcore; they count.

    ViT-B/32 at 224 px: 50 tokens x 12 blocks x (4 + 8) x 768² projection and MLP MACs, 2 x 50² x 768 x 12
    attention matmul MACs, 49 x 3,072 x 768 patch embedding MACs, the 768 x 512 projection, and fvcore's
    5 per element of each of the 26 LayerNorms (2 a block, ln_pre, ln_post)."""
    from harness.backbones.factory import create_backbone
    from harness.measure.flops import count_macs

    tower = create_backbone("clip:ViT-B-32", num_classes=0, img_size=224)
    expected = 50 * 12 * 12 * 768**2 + 2 * 50**2 * 768 * 12 + 49 * 3072 * 768 + 768 * 512 + 26 * 5 * 50 * 768
    assert count_macs(tower, torch.zeros(1, 3, 224, 224)) == expected


def test_an_uncached_hf_hub_model_expands_and_skips_naming_the_fetch_command(offline: tuple[Path, Path]) -> None:  # noqa: F811
    from harness.config.options import default_settings
    from harness.kinds import outcome
    from harness.kinds.train import cases
    from harness.protocols.zeroshot import run

    settings = default_settings(backbones=["clip:hf-hub:org/absent"], protocols=["zeroshot"], datasets=["digits"], subsets=["100"],
                                devices=["cpu"], train_img_sizes=["native"], skip_unavailable=True)
    [case] = cases(settings)
    assert case.spec.img_size == 224 and case.skip is None
    from harness.data.digits import load_digits_split

    split = load_digits_split("train", img_size=32)
    with pytest.raises(WeightsUnavailable) as info:
        run(case.spec, settings, split, split, None, None)  # type: ignore[arg-type]
    assert outcome(info.value) == ("skip", str(info.value))
    assert "fetch: python -m harness weights --download clip:hf-hub:org/absent" in str(info.value)
