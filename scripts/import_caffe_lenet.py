"""Convert a Caffe LeNet caffemodel (e.g. DNS's released caffe_lenet5_original.caffemodel) into a final.pt this
suite loads with trainer.init_checkpoint / evaluate.py checkpoint=.

    python scripts/import_caffe_lenet.py <file.caffemodel> <out.pt> [--model lenet5|lenet300_100]

The caffemodel is a protobuf NetParameter; this reads its wire format directly (no Caffe, no protobuf schema):
layers (field 100, or legacy V1 field 2) with their name and blobs (BlobProto: shape / legacy num-channels-height-
width, packed float data). Caffe's ip layers flatten (C, H, W) in the order torch's flatten does, so weights copy
over unchanged. Caffe's MNIST examples feed x / 256 with no mean: evaluate with data=mnist_caffe.
"""
import argparse
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import build_model  # noqa: E402

CAFFE_TO_SUITE = {
    "lenet5": {"conv1": "conv1", "conv2": "conv2", "ip1": "fc1", "ip2": "fc2"},
    "lenet300_100": {"ip1": "fc1", "ip2": "fc2", "ip3": "fc3"},
}


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message; length-delimited values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        yield number, wire, value


def read_blob(buf: bytes) -> torch.Tensor:
    shape, legacy, data = [], {}, []
    for number, wire, value in fields(buf):
        if number == 7:                                   # BlobShape { repeated int64 dim = 1 [packed] }
            for n, w, v in fields(value):
                if n == 1 and w == 2:
                    p = 0
                    while p < len(v):
                        d, p = read_varint(v, p)
                        shape.append(d)
                elif n == 1:
                    shape.append(v)
        elif number in (1, 2, 3, 4):                       # legacy num, channels, height, width
            legacy[number] = value
        elif number == 5 and wire == 2:                    # packed float data
            data.extend(struct.unpack(f"<{len(value) // 4}f", value))
        elif number == 5:
            data.append(struct.unpack("<f", value)[0])
    if not shape:
        shape = [legacy.get(i, 1) for i in (1, 2, 3, 4)]
    return torch.tensor(data, dtype=torch.float32).reshape(shape)


def read_caffemodel(path: str) -> dict[str, list[torch.Tensor]]:
    """{layer name: [blobs]} for every layer that has blobs (new-style field 100 and legacy V1 field 2)."""
    with open(path, "rb") as f:
        net = f.read()
    layers = {}
    for number, _, value in fields(net):
        if number not in (100, 2):
            continue
        name_field, blob_field = (1, 7) if number == 100 else (4, 6)
        name, blobs = None, []
        for n, _, v in fields(value):
            if n == name_field:
                name = v.decode()
            elif n == blob_field:
                blobs.append(read_blob(v))
        if blobs:
            layers[name] = blobs
    return layers


def to_state_dict(layers: dict, model_name: str) -> dict[str, torch.Tensor]:
    model = build_model(model_name, num_classes=10, in_channels=1, image_size=28)
    state = model.state_dict()
    for caffe_name, ours in CAFFE_TO_SUITE[model_name].items():
        if caffe_name not in layers:
            raise KeyError(f"layer {caffe_name!r} not in the caffemodel (has {sorted(layers)})")
        weight, bias = layers[caffe_name][:2]     # blobs 2, 3 of DNS's compressed layers are masks
        state[f"{ours}.weight"] = weight.reshape(state[f"{ours}.weight"].shape).clone()
        state[f"{ours}.bias"] = bias.reshape(state[f"{ours}.bias"].shape).clone()
    model.load_state_dict(state)
    return model.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("caffemodel")
    parser.add_argument("out")
    parser.add_argument("--model", default="lenet5", choices=sorted(CAFFE_TO_SUITE))
    args = parser.parse_args()
    state = to_state_dict(read_caffemodel(args.caffemodel), args.model)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save({"model": state, "source": args.caffemodel}, args.out)
    nonzero = sum(int((t != 0).sum()) for t in state.values())
    total = sum(t.numel() for t in state.values())
    print(f"wrote {args.out}: {total} params, {nonzero} nonzero")


if __name__ == "__main__":
    main()
