"""``python -m engine.catalog``: methods (family, status, papers), models (the registry), experiments (reference,
fidelity, runnable here)."""
import pytest

from conftest import SHARED_DATA, has_shared
from engine import catalog


def test_methods_list_family_status_and_papers():
    by_name = {m.name: m for m in catalog.methods()}
    assert (by_name["aip"].family, by_name["aip"].status) == ("prune", "implemented")
    assert by_name["aip"].papers == ("aip", "detection")        # detection: its SSD backbone-pruning arm
    pending = [m for m in by_name.values() if m.status == "pending"]   # (none once every method is implemented)
    assert all(m.papers for m in pending)
    assert (by_name["acp"].status, by_name["acp"].papers) == ("implemented", ("acp",))
    assert by_name["l1_prune"].status == "implemented" and "dcff" in by_name["l1_prune"].papers
    assert by_name["l1_prune"].summary.startswith("L1-norm filter pruning")
    from methods import list_methods
    assert set(list_methods()) <= set(by_name)


def test_models_are_the_registry():
    from models import list_models
    listed = dict(catalog.models())
    assert list(listed) == list_models()
    assert "pretrained" in listed["resnet20"] and listed["lenet5"] == ""


def test_experiments_say_why_they_cannot_run(tmp_path):
    by_name = {e.name: e for e in catalog.experiments(data_root=str(tmp_path))}
    cell = by_name["aip/imagenet_resnet18"]
    assert (cell.paper, cell.reference, cell.fidelity) == ("aip", "aip:in_resnet18_aip", "paper")
    assert cell.runnable == "no: ImageNet (ILSVRC-2012) is not available here"
    if any(m.status == "pending" for m in catalog.methods()):   # (none once every method is implemented)
        assert any(e.runnable.startswith("no: method ") and " pending" in e.runnable for e in by_name.values())
    assert by_name["acp/cifar10_resnet56_eps035"].runnable.startswith("no: CIFAR-10 (exact) is not available")
    assert by_name["backbones/mnist_lenet5"].runnable.startswith("no: data mnist not found at " + str(tmp_path))


@pytest.mark.skipif(not has_shared("MNIST"), reason="needs the shared MNIST under DATA_ROOT")
def test_experiment_with_its_data_present_is_runnable():
    by_name = {e.name: e for e in catalog.experiments(data_root=SHARED_DATA)}
    assert by_name["backbones/mnist_lenet5"].runnable == "yes"


def test_command_line_prints_tables(capsys):
    assert catalog.main(["methods", "l1*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["method", "family", "status", "papers"] and out[1].startswith("l1_prune")
    catalog.main(["models", "resnet2*"])
    assert "resnet20" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        catalog.main(["datasets"])
