"""Unicode sweep texts for tokenizer parity (no dependencies).

Each sweep is a deterministic text built from a range of code points, so
the goldens store only a hash of the ids (tools/tok_goldens.py) and the
test rebuilds the same text (tests/tokenizer/test_tokenizer_parity.py). Two forms per
block of 4096 code points:
  raw-XXXXXX  the code points concatenated
  ctx-XXXXXX  each code point c as "x" + c + "x " (how the pre-tokenizer
              classifies c shows in where the pieces split)
Surrogates are skipped (not Unicode scalar values).
"""
import hashlib

RANGES = [(0x0, 0x40000), (0xE0000, 0xE1000), (0xF0000, 0xF0100),
          (0x10FF00, 0x110000)]
BLOCK = 4096


def sweeps():
    """Yields (name, text) for every sweep."""
    for lo, hi in RANGES:
        for start in range(lo, hi, BLOCK):
            cps = [c for c in range(start, min(hi, start + BLOCK))
                   if not 0xD800 <= c < 0xE000]
            if not cps:
                continue
            yield "raw-%06x" % start, "".join(map(chr, cps))
            yield "ctx-%06x" % start, "".join("x" + chr(c) + "x " for c in cps)


def ids_sha(ids):
    """The hash stored for a sweep's ids."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
