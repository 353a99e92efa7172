#!/usr/bin/env python3
"""Interleaved A/B of two mtpd binaries on a batch of speculative sequences:
`mtpd generate --n-samples N` (one step carries all N), k in 0, 2, auto,
64 tokens each (--ignore-eos), median of REPS runs, the order of the two
binaries alternating per round. decode tok/s = generated tokens / the
batch's decode seconds.

    bench_batch_spec.py BASE_BIN NEW_BIN N1,N2,... REPS [IDS_FILE] [MODEL]
"""
import json, subprocess, sys, time, statistics
A, B = sys.argv[1], sys.argv[2]
ns = [int(x) for x in sys.argv[3].split(',')]
reps = int(sys.argv[4])
ids = open(sys.argv[5]).read().strip() if len(sys.argv) > 5 else ','.join(
    str(100 + i * 37 % 5000) for i in range(40))
M = sys.argv[6] if len(sys.argv) > 6 else 'models/mtpd-code-small'
res = {}
for r in range(reps):
    for n in ns:
        for k in ['0', '2', 'auto']:
            for name, b in (('base', A), ('new', B)) if r % 2 == 0 else (('new', B), ('base', A)):
                t = time.time()
                o = subprocess.run([b, 'generate', '--model', M, '--ids', ids, '--max-tokens', '64',
                                    '--ignore-eos', '--draft-tokens', k, '--n-samples', str(n)],
                                   capture_output=True, text=True)
                w = time.time() - t
                s = json.loads(o.stdout)['stats']
                res.setdefault((n, k, name), []).append((s['generated_tokens'] / s['decode_seconds'], s['tokens_per_pass'], w))
print('| n | k | base decode tok/s | new decode tok/s | base tok/pass | new tok/pass | base wall s | new wall s |')
print('|---|---|---|---|---|---|---|---|')
for n in ns:
    for k in ['0', '2', 'auto']:
        b = res[(n, k, 'base')]; x = res[(n, k, 'new')]
        med = lambda v, i: statistics.median([e[i] for e in v])
        print(f'| {n} | {k} | {med(b,0):.0f} | {med(x,0):.0f} | {med(b,1):.2f} | {med(x,1):.2f} | {med(b,2):.2f} | {med(x,2):.2f} |')
