"""zoo: building torchvision models (meta, no downloads) or module:callable by name."""
import pytest
import torch
from torch import nn

from torch_alpha_profiler.zoo import ModelError, build_model, classification_models, default_input_size


def test_classification_models_lists_torchvision_classifiers():
    names = classification_models()
    assert names == sorted(names)
    for name in ("resnet18", "resnet50", "mobilenet_v3_large", "inception_v3", "convnext_tiny", "alexnet"):
        assert name in names
    assert "fasterrcnn_resnet50_fpn" not in names  # detection, not classification


@pytest.mark.parametrize("name, size", [("resnet50", (224, 224)), ("inception_v3", (299, 299)),
                                        ("alexnet", (224, 224))])
def test_default_input_size(name, size):
    assert default_input_size(name) == size


@pytest.mark.parametrize("name", ["resnet18", "inception_v3", "googlenet", "regnet_y_400mf", "efficientnet_b0"])
def test_build_on_meta_allocates_nothing_and_is_in_eval_mode(name):
    model = build_model(name, device="meta")
    assert isinstance(model, nn.Module) and not model.training
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.device.type == "meta" for t in tensors)


def test_build_on_cpu_gives_random_weights():
    model = build_model("alexnet", device="cpu")
    w = model.features[0].weight
    assert w.device.type == "cpu" and w.abs().sum() > 0


def test_meta_model_runs_a_shape_only_forward():
    model = build_model("resnet18", device="meta")
    with torch.no_grad():
        y = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert y.shape == (2, 1000) and y.device.type == "meta"


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match=r"unknown model 'resnet181'.*did you mean .*resnet18"):
        build_model("resnet181")
    with pytest.raises(ModelError) as info:
        build_model("zzzzzz")
    assert "did you mean" not in str(info.value)
    assert issubclass(ModelError, ValueError)


def test_module_callable(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def small():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)).train()\n"
        "def not_a_model():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_nets:small", device="meta")
    assert not model.training and model[0].weight.device.type == "meta"
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        build_model("my_nets:not_a_model")
    with pytest.raises(ModelError, match="cannot load model 'my_nets:missing'"):
        build_model("my_nets:missing")
    with pytest.raises(ModelError, match="cannot load model 'no_such_module_xyz:f'"):
        build_model("no_such_module_xyz:f")
