"""A team's own backbone: ``pkg.module:factory``, an entry point, a timm registration; its features, checkpoint,
identity, and every bad input refused before a case runs (harness.backbones.own, own_model)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from harness.backbones import own, own_model
from harness.backbones.factory import backbone_entry, create_backbone, create_model, resolve_backbones
from harness.backbones.registry import BackboneUnsupported, UnknownBackbone
from harness.backbones.weights import WeightsMismatch, parse_backbone
from harness.config.options import default_settings
from harness.config.parsers import parse_backbones
from harness.config.preflight import check_available
from harness.errors import SettingError

# A team's model: no timm in it. Two convs (16, 32 channels, one BatchNorm), a 32 -> 32 projection and a 32 -> 10 head.
TEAMNET = '''
from torch import nn


class TeamNet(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(2 * width, 2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.proj(self.body(x)).relu())


def build(num_classes=10, **kw):
    return TeamNet(num_classes, **kw)


class Zoo:
    @staticmethod
    def small(num_classes=10):
        return TeamNet(num_classes, width=8)


Zoo.small.family = "hybrid"


build.family = "cnn"
build.edge = True


def undeclared(num_classes=10):
    return TeamNet(num_classes)


def raises(num_classes=10):
    raise RuntimeError("the config file teamnet.yaml is missing")


def not_a_module(num_classes=10):
    return {"model": TeamNet(num_classes)}


def fixed_width(num_classes=10):
    return TeamNet(7)


def big_only(num_classes=10):
    net = TeamNet(num_classes)
    net.body[0].stride = (64, 64)  # a 32 px input leaves nothing after the first conv at this stride... and 3x3 with pad 1 still runs
    net.body.insert(0, nn.Unflatten(1, (3, 1)))  # 4-D input becomes 5-D: the conv refuses it at every size
    return net


for _factory in (raises, not_a_module, fixed_width, big_only):
    _factory.family = "cnn"
'''
PARAMS = 3 * 16 * 9 + 16 + 2 * 16 + 16 * 32 * 9 + 32 + 32 * 32 + 32 + 32 * 10 + 10


@pytest.fixture(autouse=True)
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as a team's repository root (the working directory) holding ``teamnet/model.py``;
    the caches of resolved names cleared before and after."""
    (tmp_path / "teamnet").mkdir()
    (tmp_path / "teamnet" / "__init__.py").write_text("")
    (tmp_path / "teamnet" / "model.py").write_text(TEAMNET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "teamnet" or m.startswith("teamnet.")]:
        monkeypatch.delitem(sys.modules, name)
    _clear()
    yield tmp_path
    _clear()


def _clear() -> None:
    for cached in (own.is_own, own.own_backbone, own_model.own_identity):
        cached.cache_clear()


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_a_factory_from_the_working_directory_is_a_backbone_beside_timm_names() -> None:
    assert resolve_backbones(["teamnet.model:build", "resnet18"]) == ["teamnet.model:build", "resnet18"]
    assert backbone_entry("teamnet.model:build").family == "cnn" and backbone_entry("teamnet.model:build").edge
    model = create_backbone("teamnet.model:build", num_classes=10, img_size=32)
    assert _params(model) == PARAMS == 6506
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)


def test_features_are_the_input_of_the_layer_that_makes_the_logits(team: Path) -> None:
    features = create_backbone("teamnet.model:build", num_classes=0, img_size=32)
    x = torch.randn(3, 3, 32, 32)
    full = create_model(parse_backbone("teamnet.model:build"), num_classes=10, img_size=32)[0]
    full.load_state_dict(features.model.state_dict())  # type: ignore[union-attr]
    with torch.no_grad():
        expected = full.proj(full.body(x)).relu()
        assert torch.equal(features(x), expected)  # the head's input: proj's 32 outputs after the relu, not proj's own
    assert features.num_features == 32  # type: ignore[union-attr]
    identity = own_model.own_identity("teamnet.model:build", 10, 32)
    assert identity["feature_layer"] == "head" and identity["backbone_source"] == "teamnet.model:build"
    assert identity["backbone_file"] == str(team / "teamnet" / "model.py") and identity["backbone_code_files"] == 2


def test_the_code_digest_follows_the_source_and_the_shape_digest_the_parameters(team: Path) -> None:
    before = own_model.own_identity("teamnet.model:build", 10, 32)
    (team / "teamnet" / "model.py").write_text(TEAMNET.replace("# a 32 px", "# at 32 px"))  # a comment: code, not shapes
    _clear()
    after = own_model.own_identity("teamnet.model:build", 10, 32)
    assert before["backbone_code_digest"] != after["backbone_code_digest"]
    assert before["backbone_shape_digest"] == after["backbone_shape_digest"]
    assert own_model.own_identity("teamnet.model:build", 5, 32)["backbone_shape_digest"] != after["backbone_shape_digest"]


def test_an_own_checkpoint_loads_under_a_fresh_head_and_another_architectures_is_refused(team: Path) -> None:
    trained = create_backbone("teamnet.model:build", num_classes=10, img_size=32)
    torch.save({"model": trained.state_dict()}, team / "teamnet10.pt")
    token = f"teamnet.model:build@{team / 'teamnet10.pt'}"
    assert parse_backbones(token) == [token]
    model, found = create_model(parse_backbone(token), num_classes=3, img_size=32)
    assert found is not None and found.source == "file" and parse_backbone(token).name == "teamnet.model:build@teamnet10"
    assert torch.equal(model.proj.weight, trained.proj.weight) and tuple(model.head.weight.shape) == (3, 32)
    torch.save(create_backbone("resnet18", num_classes=10, img_size=32).state_dict(), team / "resnet.pt")
    with pytest.raises(WeightsMismatch, match=r"resnet.pt does not fit teamnet.model:build: 11 missing keys \(e.g. body.0.bias, body.0.weight, body.1.bias\), "
                       r"122 unexpected keys \(e.g. bn1.bias, bn1.num_batches_tracked, bn1.running_mean\), 0 other-shape keys; "
                       r"name the architecture it was trained as: ARCH@"):
        parse_backbone(f"teamnet.model:build@{team / 'resnet.pt'}") and resolve_backbones([f"teamnet.model:build@{team / 'resnet.pt'}"])


def _publish(site: Path, dist: str, value: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{own.ENTRY_GROUP}]\nteamnet = {value}\n")


def test_an_entry_point_and_a_timm_registration_are_the_same_backbone(team: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(team / "site", "teamnet-dist", "teamnet.model:build")
    monkeypatch.syspath_prepend(str(team / "site"))
    (team / "teamnet" / "registered.py").write_text(
        "from timm.models import register_model\nfrom teamnet.model import TeamNet\n\n\n@register_model\n"
        "def teamnet_own_test(pretrained=False, num_classes=10, **kw):\n    return TeamNet(num_classes)\n\n\n"
        "teamnet_own_test.family = 'cnn'\n")
    monkeypatch.syspath_prepend(str(team))
    __import__("teamnet.registered")
    forms = ["teamnet.model:build", "teamnet", "teamnet_own_test"]
    assert resolve_backbones(forms) == forms
    assert [own.own_backbone(f).via for f in forms] == ["module:factory", "entry point of teamnet-dist", "timm register_model"]
    assert own.own_backbone("teamnet_own_test").source == "teamnet.registered:teamnet_own_test"
    digests = {own_model.own_identity(f, 10, 32)["backbone_shape_digest"] for f in forms}
    assert len(digests) == 1 and {_params(create_backbone(f, num_classes=10, img_size=32)) for f in forms} == {PARAMS}
    assert not own.is_own("resnet18")  # timm's own registrations stay timm names


def test_a_name_two_packages_publish_is_refused_naming_both(team: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(team / "site", "teamnet-a", "teamnet.model:build")
    _publish(team / "site", "teamnet-b", "teamnet.model:undeclared")
    monkeypatch.syspath_prepend(str(team / "site"))
    with pytest.raises(SettingError) as info:
        parse_backbones("teamnet")
    assert str(info.value) == ("backbone 'teamnet' is published in the entry-point group backbone_bench.backbones by teamnet-a "
                               "(teamnet.model:build) and teamnet-b (teamnet.model:undeclared); uninstall one, or name the factory "
                               "itself: --backbones teamnet.model:build")


@pytest.mark.parametrize(("token", "message"), [
    ("teamnet.modle:build", r"^teamnet.modle:build: cannot import teamnet.modle \(ModuleNotFoundError: No module named "
                            r"'teamnet.modle'\); searched .+ \(the working directory\), .+; run from the repository that holds it"),
    ("teamnet.model:biuld", r"^teamnet.model:biuld: teamnet.model has no attribute 'biuld' \(did you mean build\?\); "
                            r"its callables: TeamNet, build, Zoo, undeclared, raises, not_a_module, fixed_width, big_only$"),
    ("teamnet.model:undeclared", r"^teamnet.model:undeclared: teamnet.model:undeclared declares no family; declare it beside "
                                 r"the factory in .+/teamnet/model.py: undeclared.family = \"cnn\" \(one of cnn, transformer, hybrid\)$"),
])
def test_names_that_cannot_be_read_are_refused_when_parsed(token: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse_backbones(token)


@pytest.mark.parametrize(("factory", "message"), [
    ("raises", "teamnet.model:raises(num_classes=10) raised RuntimeError: the config file teamnet.yaml is missing"),
    ("not_a_module", "teamnet.model:not_a_module(num_classes=10) returned dict, not a torch.nn.Module; return the model"),
    ("fixed_width", "built with num_classes=10, its forward at 32px returned (2, 7), not logits [N, 10]; size the classifier from the num_classes keyword"),
    ("big_only", "cannot run a batch at 32px: RuntimeError: "),
])
def test_factories_that_cannot_serve_are_refused_before_any_case(factory: str, message: str) -> None:
    settings = default_settings(backbones=parse_backbones(f"teamnet.model:{factory}"), img_sizes=[32])
    with pytest.raises(SettingError) as info:
        check_available(settings)
    assert str(info.value).startswith(f"--backbones teamnet.model:{factory}: {message}")


def test_a_declared_feature_layer_that_is_not_there_is_named() -> None:
    own.own_backbone("teamnet.model:build").factory.feature_layer = "neck"  # type: ignore[attr-defined]
    try:
        _clear()
        with pytest.raises(BackboneUnsupported, match=r"feature_layer 'neck' is no module of teamnet.model:build's model; its last modules: "):
            create_backbone("teamnet.model:build", num_classes=0, img_size=32)
    finally:
        del own.own_backbone("teamnet.model:build").factory.feature_layer  # type: ignore[attr-defined]


def test_unknown_plain_names_stay_unknown_backbones() -> None:
    with pytest.raises(UnknownBackbone, match="unknown own backbone 'nothing_here'"):
        own.own_backbone("nothing_here")


def test_a_plain_module_gets_the_get_classifier_lp_ft_sets_from_the_probe() -> None:
    from harness.training.probes import LinearProbe, load_into_head

    model = create_backbone("teamnet.model:build", num_classes=3, img_size=32)
    assert model.get_classifier() is model.head  # type: ignore[operator]
    probe = LinearProbe(torch.ones(3, 32), torch.zeros(3), torch.zeros(32), torch.full((32,), 2.0), l2=0.0, iterations=1, seconds=0.0)
    load_into_head(probe, model)
    assert torch.equal(model.head.weight, torch.full((3, 32), 0.5))


def test_cached_features_are_keyed_by_the_code(team: Path) -> None:
    from harness.protocols.frozen import code_suffix

    before = code_suffix("teamnet.model:build")
    (team / "teamnet" / "model.py").write_text(TEAMNET + "\n# retrained with another stem\n")
    _clear()
    assert before.startswith("#code=") and code_suffix("teamnet.model:build") != before and code_suffix("resnet18") == ""


def test_a_factory_may_be_a_dotted_attribute_as_entry_points_allow() -> None:
    assert backbone_entry("teamnet.model:Zoo.small").family == "hybrid"
    assert _params(create_backbone("teamnet.model:Zoo.small", num_classes=10, img_size=32)) == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 16 * 9 + 16 + 16 * 16 + 16 + 16 * 10 + 10
