"""scripts/nat_cell_scores.py: which cells it scores, and an end-to-end run on a fresh super-net."""
import csv
import importlib.util
import os
import subprocess
import sys

import torch

from models.nat_cells import DARTS, RESBLOCK, NATSupernet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("nat_cell_scores", os.path.join(ROOT, "scripts", "nat_cell_scores.py"))
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_resblock_swaps_replace_every_null_and_keep_the_wiring():
    cells = dict(probe.cells_to_score(RESBLOCK, steps=4, n_uniform=3, seed=0))
    assert list(cells)[:5] == ["input", "input null->skip_connect", "input null->conv_3x3",
                               "input conv_3x3->sep_conv_3x3", "input conv_3x3->max_pool_3x3"]
    assert "input sep_conv_3x3->max_pool_3x3" not in cells            # no sep conv in the ResNet block
    swapped = cells["input null->skip_connect"]["normal"]
    assert [e[1:] for e in swapped] == [e[1:] for e in RESBLOCK["normal"]]
    assert [e[0] for e in swapped] == ["skip_connect"] * 3 + ["conv_3x3", "skip_connect", "conv_3x3"] + \
        ["skip_connect"] * 2
    assert cells["input"]["normal_concat"] == [2, 3, 4, 5]           # scored as the derivation scores: every node
    assert sum(k.startswith("uniform") for k in cells) == 3


def test_uniform_cells_have_no_null_and_repeat_with_the_seed():
    a = probe.cells_to_score(DARTS, steps=4, n_uniform=4, seed=7)
    b = probe.cells_to_score(DARTS, steps=4, n_uniform=4, seed=7)
    assert a == b
    uni = [c for label, c in a if label.startswith("uniform")]
    assert all(o != "null" for c in uni for o, _, _ in c["normal"] + c["reduce"])
    null = probe.cells_to_score(DARTS, steps=4, n_uniform=20, seed=7, with_null=True)
    assert [label for label, _ in null][-2:] == ["uniform_null 18", "uniform_null 19"]
    assert any(o == "null" for _, c in null[1:] for o, _, _ in c["normal"] + c["reduce"])


def test_script_scores_a_saved_supernet_on_held_out_images(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "trained.pt"
    torch.save({"model": NATSupernet(10, 3, 4, 2, 4, 3).state_dict()}, ckpt)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "nat_cell_scores.py"), "data=synthetic",
                    "model=nat_resblock", "method=nat", "model.width=4", "model.layers=2", "method.derive.heldout_size=64",
                    f"+probe.checkpoint={ckpt}", "+probe.uniform_cells=2", f"hydra.run.dir={tmp_path}/h"],
                   cwd=tmp_path, env={**env, "PYTHONPATH": ROOT}, check=True, capture_output=True, text=True)
    rows = list(csv.DictReader(open(tmp_path / "results" / "measurements" / "nat_cell_scores.csv")))
    assert [r["cell"] for r in rows] == ["input", "input null->skip_connect", "input null->conv_3x3",
                                         "input conv_3x3->sep_conv_3x3", "input conv_3x3->max_pool_3x3",
                                         "input skip_connect->null", "uniform 0", "uniform 1"]
    assert all(0.0 <= float(r["score"]) <= 1.0 and r["heldout_images"] == "64" for r in rows)
