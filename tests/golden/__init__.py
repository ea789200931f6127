"""Golden files made by running the authors' code (or, where there is none, by hand from the paper's equations).

Each ``<method>/<stem>.json`` header names the repository, commit, file and function, how it was run and the
tolerances; ``load(method, stem)`` returns (header, data) with data loaded from the header's ``file``."""
import json
from pathlib import Path

import torch

ROOT = Path(__file__).parent


def load(method: str, stem: str):
    header = json.loads((ROOT / method / f"{stem}.json").read_text())
    path = ROOT / method / header["file"]
    data = json.loads(path.read_text()) if path.suffix == ".json" else torch.load(path)
    return header, data
