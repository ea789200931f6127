"""engine/tasks.py: the step's task loss per kind of data, and the loss a method gets for its extra passes."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from engine.tasks import HEADER_DETECTION, ClassificationTask, DetectionTask, make_task
from methods.base import Method
from methods.common.distill import kd_loss


def _tcfg(**over):
    cfg = {"label_smoothing": 0.0, "distill": {"teacher": None, "alpha": 0.5, "temperature": 4.0}}
    cfg.update(over)
    return OmegaConf.create(cfg)


CTX = SimpleNamespace(num_classes=3, in_channels=1, image_size=4)


class _Recorder(Method):
    """Returns the task loss it is given, plus the task loss of a second pass on doubled logits."""
    def __init__(self):
        self.seen = None

    def loss(self, model, inputs, outputs, targets, task_loss):
        self.seen = task_loss
        return task_loss + self.task_loss(2 * outputs, targets)


def test_classification_loss_mixes_ce_and_kd_on_the_batch_teacher_logits():
    torch.manual_seed(0)
    task = ClassificationTask(_tcfg(label_smoothing=0.1), CTX, torch.device("cpu"))
    teacher = torch.nn.Linear(4, 3)
    task.teacher = lambda x: teacher(x.flatten(1))
    student = torch.nn.Linear(4, 3)
    model = lambda x: student(x.flatten(1))
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    method = _Recorder()
    task.bind(method)
    loss = task.step_loss(model, method, x, y)
    logits, t_logits = model(x), teacher(x.flatten(1)).detach()

    def expected(z):
        return 0.5 * F.cross_entropy(z, y, label_smoothing=0.1) + 0.5 * kd_loss(z, t_logits, 4.0)
    assert torch.allclose(method.seen, expected(logits))
    assert torch.allclose(loss, expected(logits) + expected(2 * logits))   # the extra pass sees the same teacher logits


def test_classification_without_teacher_is_plain_cross_entropy():
    task = ClassificationTask(_tcfg(), CTX, torch.device("cpu"))
    z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1])
    assert task.loss(z, y).item() == pytest.approx(F.cross_entropy(z, y).item())


def test_detection_sums_the_detector_loss_terms_and_gives_methods_no_task_loss_fn():
    task = make_task(SimpleNamespace(task="detection"), _tcfg(), CTX, torch.device("cpu"))
    assert isinstance(task, DetectionTask) and task.header == HEADER_DETECTION
    method = _Recorder()
    method.task_loss_fn = lambda *_: None
    task.bind(method)
    assert method.task_loss_fn is None
    model = lambda x, y: {"loc": torch.tensor(1.5), "cls": torch.tensor(0.25)}
    passthrough = SimpleNamespace(loss=lambda model, x, out, y, task_loss: task_loss)
    assert task.step_loss(model, passthrough, None, None).item() == pytest.approx(1.75)


def test_unknown_task_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="data.task='segmentation'"):
        make_task(SimpleNamespace(task="segmentation"), _tcfg(), CTX, torch.device("cpu"))
