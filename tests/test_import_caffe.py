"""scripts/import_caffe_lenet.py: a Caffe NetParameter written by hand in protobuf wire format is read back
(new-style and legacy V1 layers, packed and legacy blob shapes) and mapped onto the suite's LeNets."""
import importlib.util
import os
import struct

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("import_caffe_lenet", os.path.join(ROOT, "scripts", "import_caffe_lenet.py"))
caffe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(caffe)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:            # length-delimited
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def blob(t: torch.Tensor, legacy: bool = False) -> bytes:
    data = field(5, struct.pack(f"<{t.numel()}f", *t.flatten().tolist()))
    if legacy:                                                # num, channels, height, width as varints
        dims = list(t.shape) + [1] * (4 - t.dim())
        return b"".join(varint(i << 3 | 0) + varint(d) for i, d in zip((1, 2, 3, 4), dims)) + data
    return field(7, field(1, b"".join(varint(d) for d in t.shape))) + data


def layer(name: str, tensors, v1: bool = False) -> bytes:
    if v1:   # V1LayerParameter: name 4, blobs 6, inside NetParameter field 2
        return field(2, field(4, name.encode()) + b"".join(field(6, blob(t, legacy=True)) for t in tensors))
    return field(100, field(1, name.encode()) + field(2, b"Convolution") + b"".join(field(7, blob(t)) for t in tensors))


def test_lenet5_caffemodel_round_trip(tmp_path):
    torch.manual_seed(0)
    ref = caffe.build_model("lenet5", num_classes=10, in_channels=1, image_size=28).state_dict()
    names = {"conv1": "conv1", "conv2": "conv2", "ip1": "fc1", "ip2": "fc2"}
    net = field(1, b"LeNet")                                  # NetParameter.name
    for i, (cname, ours) in enumerate(names.items()):
        w, b = ref[f"{ours}.weight"], ref[f"{ours}.bias"]
        if cname.startswith("ip"):
            w = w.view(w.shape[0], -1)
        extra = [torch.ones_like(w), torch.ones_like(b)]      # DNS's mask blobs 2, 3 are ignored
        net += layer(cname, [w, b, *extra], v1=(i % 2 == 1))
    net += layer("relu1", [])                                 # blob-less layers are skipped
    path = tmp_path / "lenet5.caffemodel"
    path.write_bytes(net)
    layers = caffe.read_caffemodel(str(path))
    assert sorted(layers) == ["conv1", "conv2", "ip1", "ip2"] and len(layers["conv2"]) == 4
    assert layers["conv1"][0].shape == (20, 1, 5, 5) and layers["conv2"][0].shape == (50, 20, 5, 5)
    state = caffe.to_state_dict(layers, "lenet5")
    for k, v in ref.items():
        assert torch.equal(state[k], v), k


def test_missing_layer_is_named(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(layer("ip1", [torch.zeros(300, 784), torch.zeros(300)]))
    with pytest.raises(KeyError, match="'ip2'"):
        caffe.to_state_dict(caffe.read_caffemodel(str(path)), "lenet300_100")
