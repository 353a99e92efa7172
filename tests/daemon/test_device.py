"""--device auto|cpu|cuda|cuda:N on every mtpd command that loads a model
(generate, logits, info, serve): the value's form, the one-line refusal of
a device that is not there, what info / generate --json / serve's start
line, stats and /metrics say about where the model runs.

The command's side is daemon/cli_runtime.c, the library's model/device.c
(mtpd_model_device, mtpd_cuda_devices, MTPD_ENODEV). Tests that need a GPU skip where info reports no CUDA device; the ones
that need none skip where there is one."""
import json
import os
import re
import subprocess
import urllib.request

import pytest

from daemon_fixture import Daemon, mtpd_serve  # noqa: F401 (fixture)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "mtpd-code-small")
IDS = "5,6,7,8"


def run(mtpd, *args, timeout=120):
    return subprocess.run([mtpd, *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def info(mtpd):
    r = run(mtpd, "info", "--model", MODEL, "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def no_gpu(info):
    if info["cuda_devices"] > 0:
        pytest.skip(f"{info['cuda_devices']} CUDA device(s) present: the "
                    "refusal of a missing GPU cannot be seen here")


@pytest.fixture(scope="module")
def gpu(info):
    if info["cuda_devices"] == 0:
        pytest.skip("no CUDA device usable by this mtpd (cuda_build: "
                    f"{info['cuda_build']}): GPU runs skipped")


# ---- every command: help, form of the value ----

LOADERS = {
    "generate": ["--model", MODEL, "--ids", IDS, "--max-tokens", "3",
                 "--json"],
    "logits": ["--model", MODEL, "--ids", IDS],
    "info": ["--model", MODEL],
}


@pytest.mark.parametrize("cmd", ["generate", "logits", "info", "serve"])
def test_help_explains_device(mtpd, cmd):
    r = run(mtpd, cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "--device" in r.stdout
    for word in ("auto", "cpu", "cuda:N"):
        assert word in r.stdout, (cmd, word)


@pytest.mark.parametrize("cmd", ["generate", "logits", "info", "serve"])
@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cuda0",
                                   "CPU", "cuda:-1", ""])
def test_bad_value_is_a_usage_error(mtpd, cmd, value):
    args = LOADERS.get(cmd, ["--model", MODEL])
    r = run(mtpd, cmd, *args, "--device", value)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtpd: error: --device"), \
        r.stderr
    assert r.stdout == ""


def test_device_needs_a_value(mtpd):
    r = run(mtpd, "logits", "--model", MODEL, "--ids", IDS, "--device")
    assert r.returncode == 2 and "--device" in r.stderr


# ---- --device cpu: runs, same results as the default on a CPU ----

def test_info_reports_device(mtpd, info):
    assert info["device"] == "cpu"
    assert isinstance(info["cuda_build"], bool)
    assert isinstance(info["cuda_devices"], int) and info["cuda_devices"] >= 0
    if not info["cuda_build"]:
        assert info["cuda_devices"] == 0
    # the rest of info is unchanged by --device
    r = run(mtpd, "info", "--model", MODEL)
    assert r.returncode == 0, r.stderr
    plain = json.loads(r.stdout)
    for k, v in plain.items():
        if k != "device":
            assert info[k] == v, k


def test_logits_cpu_equal_default_on_cpu(mtpd, no_gpu):
    a = run(mtpd, "logits", "--model", MODEL, "--ids", IDS, "--last", "2")
    b = run(mtpd, "logits", "--model", MODEL, "--ids", IDS, "--last", "2",
            "--device", "cpu")
    c = run(mtpd, "logits", "--model", MODEL, "--ids", IDS, "--last", "2",
            "--device=auto")
    assert a.returncode == b.returncode == c.returncode == 0, b.stderr
    assert a.stdout == b.stdout == c.stdout
    assert b.stderr == ""


@pytest.mark.parametrize("extra", [[], ["--n-samples", "2"],
                                   ["--compare-k", "0,2"]],
                         ids=["one", "n-samples", "compare-k"])
def test_generate_cpu_reports_device(mtpd, extra):
    r = run(mtpd, "generate", *LOADERS["generate"], "--device", "cpu",
            "--draft-tokens", "2", *extra)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["device"] == "cpu"


def test_generate_cpu_same_tokens_as_default(mtpd, no_gpu):
    outs = []
    for dev in ([], ["--device", "cpu"]):
        r = run(mtpd, "generate", *LOADERS["generate"], "--draft-tokens",
                "2", *dev)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout)["ids"])
    assert outs[0] == outs[1]


# ---- --device cuda where there is no GPU: one line, non-zero ----

@pytest.mark.parametrize("cmd", ["generate", "logits", "info", "serve"])
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_is_refused_in_one_line(mtpd, no_gpu, cmd, value):
    args = LOADERS.get(cmd, ["--model", MODEL])
    r = run(mtpd, cmd, *args, "--device", value)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith(f"mtpd: error: --device {value}: "), line
    assert "without CUDA" in line or "no CUDA GPU" in line, line
    assert "--device cpu" in line  # says what to do instead


def test_cuda_refusal_says_whether_built_with_cuda(mtpd, info, no_gpu):
    r = run(mtpd, "info", "--model", MODEL, "--device", "cuda")
    if info["cuda_build"]:
        assert "no CUDA GPU found" in r.stderr, r.stderr
    else:
        assert "built without CUDA" in r.stderr, r.stderr


# ---- serve: start line, stats, /metrics ----

def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_serve_reports_device(mtpd_serve):  # noqa: F811 (fixture)
    port = free_port()
    with Daemon(mtpd_serve, "--device", "cpu", "--threads", "1",
                "--http", str(port)) as d:
        c = d.client()
        st = c.stats()
        assert st["device"] == "cpu", st
        c.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=30) as r:
            body = r.read().decode()
        assert re.search(r'^mtpd_device_info\{device="cpu"\} 1$', body,
                         re.M), body
        assert d.stop() == 0
        first = [ln for ln in d.log().splitlines() if "serving" in ln]
        assert first and "; device cpu (" in first[0], d.log()
        assert ("CUDA build" in first[0]) or ("without CUDA" in first[0])


def test_serve_act_dtype(mtpd_serve):  # noqa: F811 (fixture)
    """--act-dtype bf16: stats and /metrics say whether it took effect
    (it does where the CPU has AVX512-BF16), and generation works."""
    from tools.ref.testutil import cpu_has_avx512_bf16
    want = "bf16" if cpu_has_avx512_bf16() else "f32"
    port = free_port()
    with Daemon(mtpd_serve, "--device", "cpu", "--threads", "1",
                "--act-dtype", "bf16", "--http", str(port)) as d:
        c = d.client()
        assert c.stats()["act_dtype"] == want
        res = c.generate("def f(x):", max_tokens=8, ignore_eos=True)
        assert len(res.ids) == 8, res
        c.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=30) as r:
            body = r.read().decode()
        assert re.search(r'^mtpd_act_dtype_info\{act_dtype="%s"\} 1$' % want,
                         body, re.M), body
        assert d.stop() == 0
    r = subprocess.run([mtpd_serve, "serve", "--act-dtype", "f16"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--act-dtype" in r.stderr


# ---- the library's side (model/dev_*.c): merged builds only ----

def test_library_refuses_missing_cuda(mtpd, no_gpu):
    """bench_forward hands --device to mtpd_model_load unchecked: the
    library itself answers (MTPD_ENODEV and its reason)."""
    bench = os.path.join(os.path.dirname(mtpd), "bench_forward")
    if not os.path.exists(bench):
        pytest.skip(f"{bench} not built")
    r = run(bench, "--model", MODEL, "--device", "cuda", "--secs", "0.01",
            "--t", "1")
    assert r.returncode != 0, r.stdout
    assert r.returncode < 128, "crashed: " + r.stderr
    assert r.stderr.strip() and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr


def test_library_refuses_bad_device_name(mtpd):
    bench = os.path.join(os.path.dirname(mtpd), "bench_forward")
    if not os.path.exists(bench):
        pytest.skip(f"{bench} not built")
    r = run(bench, "--model", MODEL, "--device", "tpu", "--secs", "0.01",
            "--t", "1")
    assert 0 < r.returncode < 128, r.stdout + r.stderr


# ---- on a GPU (skipped without one) ----

def test_cuda_logits_close_to_cpu(mtpd, gpu):
    """A smoke check of the device path from the command line; the parity
    suite of the CUDA model states the bound for every checkpoint."""
    import numpy as np
    rows = {}
    for dev in ("cpu", "cuda"):
        r = run(mtpd, "logits", "--model", MODEL, "--ids", IDS, "--last",
                "4", "--device", dev)
        assert r.returncode == 0, r.stderr
        rows[dev] = np.array(json.loads(r.stdout)["logits"])
    err = np.abs(rows["cuda"] - rows["cpu"]).max() / np.abs(rows["cpu"]).max()
    assert err < 2e-2, err


def test_cuda_info_and_generate(mtpd, gpu):
    r = run(mtpd, "info", "--model", MODEL, "--device", "cuda")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device"] == "cuda:0"
    r = run(mtpd, "generate", *LOADERS["generate"], "--device", "cuda")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device"] == "cuda:0"
