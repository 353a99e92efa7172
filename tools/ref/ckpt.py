"""Numpy-only safetensors reader/writer and HF checkpoint loader.

safetensors layout: 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {}}),
then the raw little-endian tensor bytes; offsets are relative to the byte
after the header.

Float encodings are done here by hand (no torch):
  bf16     round-to-nearest-even of the fp32 bit pattern
  f16      numpy's float16 cast (round-to-nearest-even)
  F8_E4M3  float8_e4m3fn: bias 7, no infinities, 0x7f/0xff NaN, max 448;
           round-to-nearest-even, saturating to +-448.
"""
import json
import math
import os
import struct

import numpy as np

# dtype name -> (numpy storage dtype, bytes per element)
STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}


# ---- float encodings -------------------------------------------------------

def f32_to_bf16_bits(x):
    """fp32 array -> uint16 bf16 bit patterns, round-to-nearest-even."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((u[nan] >> 16).astype(np.uint16) | 0x0040)  # quiet NaN
    return out


def bf16_bits_to_f32(b):
    b = np.asarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def _fp8_e4m3fn_table():
    """float32 value of each of the 256 float8_e4m3fn codes (NaN for 0x7f/0xff)."""
    vals = np.zeros(256, dtype=np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> 3) & 0xF
        m = code & 0x7
        if e == 0xF and m == 0x7:
            vals[code] = np.nan
        elif e == 0:
            vals[code] = sign * (m / 8.0) * 2.0 ** -6
        else:
            vals[code] = sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return vals


FP8_E4M3_TABLE = _fp8_e4m3fn_table()
FP8_E4M3_MAX = 448.0
_FP8_POS = FP8_E4M3_TABLE[:0x7F].astype(np.float64)  # codes 0..126, increasing


def f32_to_fp8_e4m3fn_bits(x):
    """float array -> uint8 float8_e4m3fn codes, round-to-nearest-even,
    saturating at +-448; NaN -> 0x7f (sign kept)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    sign = np.signbit(x).astype(np.uint8) << 7
    a_clip = np.minimum(a, FP8_E4M3_MAX)
    hi = np.searchsorted(_FP8_POS, a_clip, side="left")  # first value >= a
    hi = np.minimum(hi, 0x7E)
    lo = np.maximum(hi - 1, 0)
    vlo = _FP8_POS[lo]
    vhi = _FP8_POS[hi]
    dlo = a_clip - vlo
    dhi = vhi - a_clip
    pick_hi = (dhi < dlo) | ((dhi == dlo) & ((hi & 1) == 0))
    code = np.where(pick_hi, hi, lo)
    code = np.where(a_clip == vhi, hi, code)  # exact (also covers 0)
    code = code.astype(np.uint8) | sign
    nan = np.isnan(x)
    if nan.any():
        code[nan] = 0x7F | sign[nan]
    return code


def fp8_e4m3fn_bits_to_f32(b):
    return FP8_E4M3_TABLE[np.asarray(b, dtype=np.uint8)]


def encode(arr, dtype):
    """float/int numpy array -> storage array for safetensors dtype name."""
    if dtype == "BF16":
        return f32_to_bf16_bits(arr)
    if dtype == "F8_E4M3":
        return f32_to_fp8_e4m3fn_bits(arr)
    return np.asarray(arr).astype(STORAGE[dtype])


def decode(raw, dtype):
    """storage array -> float32 (floats) or the integer array."""
    if dtype == "BF16":
        return bf16_bits_to_f32(raw)
    if dtype == "F8_E4M3":
        return fp8_e4m3fn_bits_to_f32(raw)
    if dtype in ("F16", "F32"):
        return raw.astype(np.float32)
    return raw


# ---- safetensors files -----------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype_name, storage_array)} where storage_array is
    already encoded (see encode()). Written in the given order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name, (dtype, arr) in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=STORAGE[dtype])
        data = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # align data start to 8
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for data in blobs:
            f.write(data)


def read_header(path):
    """-> (header dict without __metadata__, data start offset, file size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} past end of file")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n, size


def read_safetensors(path):
    """-> {name: (dtype_name, storage_array)} (arrays are copies)."""
    header, start, size = read_header(path)
    out = {}
    with open(path, "rb") as f:
        buf = f.read()
    for name, info in header.items():
        dtype = info["dtype"]
        b, e = info["data_offsets"]
        if not (0 <= b <= e and start + e <= size):
            raise ValueError(f"{path}: {name}: data_offsets out of range")
        st = STORAGE[dtype]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * st.itemsize:
            raise ValueError(f"{path}: {name}: size does not match shape")
        arr = np.frombuffer(buf, dtype=st, count=count, offset=start + b)
        out[name] = (dtype, arr.reshape(shape).copy())
    return out


# ---- HF checkpoint directories ---------------------------------------------

def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def shard_files(model_dir):
    """Safetensors files of a checkpoint: the ones named by the index, or
    model.safetensors."""
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        return sorted(set(wm.values()))
    return ["model.safetensors"]


def load_raw(model_dir):
    """-> {name: (dtype_name, storage_array)} over all shards."""
    out = {}
    for fn in shard_files(model_dir):
        out.update(read_safetensors(os.path.join(model_dir, fn)))
    return out


def dequant_fp8_block(w_fp32, scale_inv, block):
    """W = fp8 * scale_inv per (block x block) tile; edge tiles partial."""
    out_dim, in_dim = w_fp32.shape
    sb = scale_inv.shape
    if sb != (math.ceil(out_dim / block), math.ceil(in_dim / block)):
        raise ValueError(f"weight_scale_inv shape {sb} does not match "
                         f"weight {w_fp32.shape} with block {block}")
    s = np.repeat(np.repeat(scale_inv, block, axis=0), block, axis=1)
    return w_fp32 * s[:out_dim, :in_dim]


def load_float_weights(model_dir, dtype=np.float64):
    """-> (config, {name: float array}) with FP8 weights dequantized and
    their weight_scale_inv tensors consumed."""
    cfg = load_config(model_dir)
    raw = load_raw(model_dir)
    qc = cfg.get("quantization_config") or {}
    block = (qc.get("weight_block_size") or [128, 128])[0]
    out = {}
    for name, (dt, arr) in raw.items():
        if name.endswith(".weight_scale_inv"):
            continue
        w = decode(arr, dt).astype(dtype)
        if dt == "F8_E4M3":
            sname = name[: -len("weight")] + "weight_scale_inv"
            if sname not in raw:
                raise ValueError(f"{name}: F8_E4M3 weight without {sname}")
            sdt, sarr = raw[sname]
            w = dequant_fp8_block(w, decode(sarr, sdt).astype(dtype), block)
        out[name] = w
    return cfg, out
