"""Binary export: a trained binary network stored with its binary weights as packed bits.

A run's ``final.pt`` is exported, and an export loaded into the model rebuilt from its run config, by
engine/binary_export.py (``python -m engine.binary_export <checkpoint> <out>``); this module writes and reads the
file of a model in memory.

File layout: ``MAGIC`` (8 bytes), header length (8 bytes, little endian), a JSON header, then the payload.
Payload entries (in header order):

- ``bits``: the binarized weight sign(w') of every layer with ``weight_bits == 1`` (latent weights, WSD shift and
  Libra standardisation already applied), +1 -> bit 1, -1 -> bit 0, ``numpy.packbits`` (each layer padded to a
  whole byte);
- ``param``: every other parameter as float32 — exactly what core/complexity.py counts in ``size_bits``;
- ``scale``: per-channel scales of scaled binary layers (XNOR mean|w|, Bi-Real mean|w| (folded back into the
  weight on reload), IR-Net 2^k), float32;
- ``buffer``: BatchNorm statistics and other buffers, raw.

So ``8 * param_bytes = size_bits + padding`` (padding < 8 bits per binary layer), and the file is
``16 + header + param_bytes + scale_bytes + buffer_bytes`` bytes. Reloading marks the binary layers ``frozen``:
they use the stored +-1 weights and scales directly, so the outputs equal the exported model's outputs exactly.

``load_binary_export(..., packed=None)`` also runs the binary layers whose weights and activations are both +-1
on the bit-packed XNOR-popcount kernel (methods/common/packed_binary.py; built by ``make install``) when it is
built; ``packed=True`` requires it, ``packed=False`` keeps the float +-1 path. The packed outputs are
bit-identical to the float path except in Bi-Real-scaled layers (a few float32 ulps: docs/binary_inference.md).
"""
from __future__ import annotations

import json
import struct

import numpy as np
import torch
import torch.nn as nn

from methods.common import packed_binary
from models.binary_layers import BINARY_LAYERS

MAGIC = b"CRBIN01\n"


def _binary_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, BINARY_LAYERS) and m.weight_bits == 1}


@torch.no_grad()
def export_binary(model: nn.Module, path: str, config: dict | None = None,
                  method_structure: dict | None = None) -> dict:
    """Write ``model`` to ``path``; returns the byte accounting (``param_bytes``, ``header_bytes``, ...).
    ``config``: the run config, ``method_structure``: its method's ``structure_state()`` (both stored in the header,
    for ``engine.binary_export.load_export`` to rebuild the model)."""
    binary = _binary_modules(model)
    entries, chunks = [], []
    acct = {"bits_bytes": 0, "param_bytes": 0, "scale_bytes": 0, "buffer_bytes": 0, "binary_layers": len(binary),
            "binary_weights": 0}

    def add(name, kind, data: bytes, shape, dtype):
        entries.append({"name": name, "kind": kind, "shape": list(shape), "dtype": dtype, "nbytes": len(data)})
        chunks.append(data)

    skip = {f"{n}.weight" for n in binary}
    for name, m in binary.items():
        w, scale = m.export_weight()
        bits = np.packbits((w.detach().cpu().numpy() > 0).astype(np.uint8).reshape(-1))
        add(f"{name}.weight", "bits", bits.tobytes(), w.shape, "bits")
        acct["bits_bytes"] += bits.nbytes
        acct["binary_weights"] += w.numel()
        if scale is not None:
            data = scale.detach().float().cpu().numpy().tobytes()
            add(f"{name}.frozen_scale", "scale", data, scale.shape, "float32")
            acct["scale_bytes"] += len(data)
    for name, p in model.named_parameters():
        if name in skip:
            continue
        data = p.detach().float().cpu().contiguous().numpy().tobytes()
        add(name, "param", data, p.shape, "float32")
        acct["param_bytes"] += len(data)
    for name, b in model.named_buffers():
        t = b.detach().cpu().contiguous()
        data = t.numpy().tobytes()
        add(name, "buffer", data, t.shape, str(t.dtype).removeprefix("torch."))
        acct["buffer_bytes"] += len(data)
    acct["param_bytes"] += acct["bits_bytes"]
    header = json.dumps({"format": "compress-repro binary export v1", "config": config, "entries": entries,
                         "method_structure": method_structure or {}}, sort_keys=True).encode()
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for c in chunks:
            f.write(c)
    acct["header_bytes"] = len(MAGIC) + 8 + len(header)
    acct["file_bytes"] = acct["header_bytes"] + acct["param_bytes"] + acct["scale_bytes"] + acct["buffer_bytes"]
    return acct


def read_export(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of an export; binary weights come back as float +-1 tensors."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a compress-repro binary export (bad magic)")
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        tensors = {}
        for e in header["entries"]:
            raw = f.read(e["nbytes"])
            shape = tuple(e["shape"])
            if e["kind"] == "bits":
                count = int(np.prod(shape)) if shape else 1
                bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:count]
                tensors[e["name"]] = torch.from_numpy(bits.astype(np.float32) * 2 - 1).reshape(shape)
            else:
                dtype = getattr(torch, e["dtype"])
                t = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                tensors[e["name"]] = t.reshape(shape).clone()
    return header, tensors


@torch.no_grad()
def load_binary_export(path: str, model: nn.Module, packed: bool | None = None) -> nn.Module:
    """Load an export into ``model`` (the exported network's structure, untrained; engine/binary_export.py
    ``load_export`` rebuilds it from the run config stored in the header).

    ``packed``: run W1A1 layers on the XNOR-popcount kernel (None: when it is built; True: required)."""
    header, tensors = read_export(path)
    binary_names = [e["name"][: -len(".weight")] for e in header["entries"] if e["kind"] == "bits"]
    modules = dict(model.named_modules())
    state = {k: v for k, v in tensors.items() if not k.endswith(".frozen_scale")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name in binary_names:
        m = modules[name]
        m.frozen = True
        m.frozen_scale = tensors.get(f"{name}.frozen_scale")
    if packed or (packed is None and packed_binary.available()):
        packed_binary.pack_model(model)
    return model
