import pytest

from core.registry import Registry, RegistryError


def test_decorator_forms_and_listing():
    reg = Registry("thing")

    @reg
    def bare():
        return 1

    @reg()
    def called():
        return 2

    @reg("explicit")
    def named():
        return 3

    assert reg.list() == ["bare", "called", "explicit"]
    assert reg.list("c*") == ["called"]
    assert reg.get("explicit")() == 3


def test_unknown_name_suggests_close_matches():
    reg = Registry("model")
    reg.register(lambda: None, name="resnet20")
    with pytest.raises(RegistryError, match=r"unknown model 'resnet2'.*Did you mean 'resnet20'"):
        reg.get("resnet2")


def test_duplicate_registration_fails():
    reg = Registry("thing")
    reg.register(lambda: 1, name="a")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(lambda: 2, name="a")


def test_prefix_resolver():
    reg = Registry("model")
    reg.register_prefix("timm:", lambda arch: (lambda: f"built {arch}"))
    assert reg.get("timm:resnet18")() == "built resnet18"
