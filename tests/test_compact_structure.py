"""models/channels.py: compact forms without methods (no models <-> methods import cycle) and IndexShortcut."""
import subprocess
import sys

import torch

from models.channels import IndexShortcut


def _reference(x, src, stride=2):
    """The map by definition: out[:, i] = x[:, src[i]] (zeros where src[i] = -1) after stride-2 subsampling."""
    x = x[:, :, ::stride, ::stride]
    out = torch.zeros(x.shape[0], len(src), *x.shape[2:])
    for i, s in enumerate(src):
        if s >= 0:
            out[:, i] = x[:, s]
    return out


def test_index_shortcut_matches_its_definition_and_backprops():
    torch.manual_seed(0)
    for src in ([2, -1, 0, 1, -1, 3], [3, 2, 1, 0], [-1, -1, 1]):
        x = torch.randn(2, 4, 6, 6, requires_grad=True)
        sc = IndexShortcut(src)
        out = sc(x)
        torch.testing.assert_close(out, _reference(x.detach(), src))
        out.sum().backward()
        want = torch.zeros(4)
        for s in src:
            if s >= 0:
                want[s] += 9                  # 3 x 3 subsampled positions per channel
        torch.testing.assert_close(x.grad.sum((0, 2, 3)), want * 2)


def test_models_import_no_method():
    code = ("import sys, models; from models import build_model; "
            "m = build_model('resnet20', num_classes=10, channel_config={'groups': {'layer1.0.conv1': 8}}); "
            "print(sorted(k for k in sys.modules if k == 'methods' or k.startswith('methods.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
