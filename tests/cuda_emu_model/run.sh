#!/bin/sh
# run.sh SRC OUT [test_cuda_parity args...] - the model's device path
# (model/dev_*.c and the kcuda ops) run end to end without a GPU: the
# kernels/cuda/*.cu sources of SRC (a tree with the CUDA branches merged)
# turned into C++ by tests/cuda_emu/cu2cc.py and linked against the CUDA
# emulator (tests/cuda_emu/emu.cc), except mla_attn.cu (inline PTX: mma,
# ldmatrix, cp.async), replaced by mla_ref.cu here (plain loops, fp32).
# The C sources come from a -Dcuda=disabled build of SRC (libmtpd.a, whose
# dev_none.o the dev_*.o given first replace). Slow: minutes per golden
# checkpoint. Example:
#   tests/cuda_emu_model/run.sh . /tmp/emu --no-spec \
#       tests/model/golden/fp8-yarn-mtp2
set -e
SRC=$(cd "$1" && pwd)
OUT=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
EMU=$SRC/tests/cuda_emu
mkdir -p "$OUT"
[ -d "$OUT/build" ] || meson setup "$OUT/build" "$SRC" -Dcuda=disabled >/dev/null
ninja -C "$OUT/build" libmtpd.a libmtpd_json.a >/dev/null
CXX="g++ -std=c++17 -O2 -U_FORTIFY_SOURCE -w -DMTPD_CUDA=1 -I$EMU/include \
    -I$SRC/kernels/cuda -I$SRC/kernels -I$SRC/include/mtpd -I$SRC/model \
    -include cuda_runtime.h -include $HERE/emu_extra.h"
objs=""
for cu in "$SRC"/kernels/cuda/*.cu "$HERE/mla_ref.cu"; do
    n=$(basename "$cu" .cu)
    case $n in mla_attn|backend) continue ;; esac
    python3 "$EMU/cu2cc.py" "$cu" "$OUT/$n.cc"
    $CXX -c "$OUT/$n.cc" -o "$OUT/$n.o"
    objs="$objs $OUT/$n.o"
done
g++ -std=c++17 -O2 -U_FORTIFY_SOURCE -w -I"$EMU/include" -c "$EMU/emu.cc" \
    -o "$OUT/emu.o"
CC="gcc -std=gnu11 -D_GNU_SOURCE -O1 -g -DMTPD_CUDA=1 -I$SRC/model \
    -I$SRC/include/mtpd -I$SRC/kernels -I$SRC/spec"
for f in dev_ctx dev_forward dev_model; do
    $CC -c "$SRC/model/$f.c" -o "$OUT/$f.co"
done
$CC -c "$SRC/tests/unit/test_cuda_parity.c" -o "$OUT/parity.co"
g++ -o "$OUT/parity_emu" "$OUT/parity.co" "$OUT"/dev_*.co $objs \
    "$OUT/emu.o" "$OUT/build/libmtpd.a" "$OUT/build/libmtpd_json.a" \
    -lpthread -lm
if [ $# -gt 0 ]; then
    exec "$OUT/parity_emu" "$@"
fi
