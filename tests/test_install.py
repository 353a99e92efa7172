"""`meson install` gives a usable library: the public headers under
include/mtpd/ compile on their own, and a small C program built with `cc`
against them through pkg-config (mtpd, mtpd-tokenizer) links the shared
libraries and, with --static, the static ones, then loads the committed
default model and tokenizer and runs one forward pass.

The build directory is the one holding MTPD_BIN (build/ by default); the
test installs it with --no-rebuild into a temporary --destdir."""
import glob
import json
import os
import shutil
import subprocess

import pytest

from tools.ref.testutil import mtpd_bin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "mtpd-code-small")
PUBLIC = ["model.h", "spec.h", "sample.h", "stats.h", "stop.h", "textout.h",
          "draft_vocab.h", "tokenizer.h"]

PROG = r"""
#include <stdio.h>
#include <string.h>

#include <mtpd/spec.h>
#include <tokenizer.h>

static int n_lines;
static void on_log(void *ud, int level, const char *msg)
{
    (void)ud; (void)level; (void)msg;
    n_lines++;
}

int main(int argc, char **argv)
{
    char err[512];
    struct mtpd_model *m;
    mtpd_set_log(on_log, NULL);
    if (mtpd_model_load(argv[1], NULL, &m, err, sizeof err)) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    struct mtpd_tok *tok;
    if (mtpd_tok_load_dir(&tok, argv[1], err, sizeof err)) {
        fprintf(stderr, "tokenizer: %s\n", err);
        return 1;
    }
    int32_t ids[3] = {1, 2, 3};
    struct mtpd_kv *kv = mtpd_kv_new(m, 8);
    struct mtpd_ctx *c = mtpd_ctx_new(m, 8, 1);
    struct mtpd_seq s = {kv, ids, 3, 2};
    int rc = kv && c ? mtpd_forward(c, &s, 1) : MTPD_ENOMEM;
    const float *lg = rc == 0 ? mtpd_ctx_logits(c, 2) : NULL;
    printf("{\"rc\": %d, \"layers\": %d, \"n_ids\": %d, \"logit0\": %g, "
           "\"log_lines\": %d, \"finish\": \"%s\", \"isa\": \"%s\"}\n",
           rc, mtpd_model_config(m)->num_hidden_layers,
           (int)mtpd_tok_n_ids(tok), lg ? lg[0] : 0.0, n_lines,
           spec_finish_str(SPEC_FINISH_LENGTH), mtpd_isa());
    mtpd_ctx_free(c);
    mtpd_kv_free(kv);
    mtpd_tok_free(tok);
    mtpd_model_free(m);
    return rc != 0;
}
"""


def build_dir():
    d = os.path.dirname(os.path.abspath(mtpd_bin()))
    if not os.path.isdir(os.path.join(d, "meson-info")):
        pytest.skip(f"{d} is not a meson build directory (MTPD_BIN)")
    return d


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """-> (prefix inside destdir, pkgconfig dir, libdir)."""
    if not shutil.which("cc") or not shutil.which("pkg-config"):
        pytest.skip("cc or pkg-config not installed (tools/setup.sh)")
    dest = str(tmp_path_factory.mktemp("destdir"))
    r = subprocess.run(["meson", "install", "-C", build_dir(), "--destdir",
                        dest, "--no-rebuild", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    pcs = glob.glob(os.path.join(dest, "**", "pkgconfig", "mtpd.pc"),
                    recursive=True)
    assert len(pcs) == 1, f"mtpd.pc installed {len(pcs)} times"
    pcdir = os.path.dirname(pcs[0])
    libdir = os.path.dirname(pcdir)
    prefix = None
    for line in open(pcs[0]):
        if line.startswith("prefix="):
            prefix = dest + line.split("=", 1)[1].strip()
    assert prefix and os.path.isdir(prefix), prefix
    return prefix, pcdir, libdir


def pkg_config(installed, *args):
    prefix, pcdir, _ = installed
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir)
    r = subprocess.run(["pkg-config", f"--define-variable=prefix={prefix}",
                        *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_pkg_config_cflags(installed):
    # both <mtpd/spec.h> and <spec.h> work, whatever the prefix
    prefix, _, _ = installed
    for pc in ["mtpd", "mtpd-tokenizer"]:
        flags = pkg_config(installed, "--cflags", pc)
        assert "-I" + os.path.join(prefix, "include") in flags, flags
        assert "-I" + os.path.join(prefix, "include", "mtpd") in flags, flags


def test_installed_files(installed):
    prefix, pcdir, libdir = installed
    inc = os.path.join(prefix, "include", "mtpd")
    assert sorted(os.listdir(inc)) == sorted(PUBLIC)
    for lib in ["mtpd", "mtpd_json", "mtpd_tokenizer"]:
        assert os.path.exists(os.path.join(libdir, f"lib{lib}.a")), lib
        assert os.path.exists(os.path.join(libdir, f"lib{lib}.so")), lib
    assert os.path.exists(os.path.join(prefix, "bin", "mtpd"))
    assert os.path.exists(os.path.join(pcdir, "mtpd-tokenizer.pc"))


def test_libmtpd_needs_no_pcre2(installed):
    # the tokenizer (and PCRE2) is its own library
    _, _, libdir = installed
    r = subprocess.run(["readelf", "-d", os.path.join(libdir, "libmtpd.so")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("readelf not available")
    assert "libmtpd_json" in r.stdout
    assert "pcre2" not in r.stdout and "tokenizer" not in r.stdout


@pytest.mark.parametrize("lib,prefixes", [
    ("mtpd", ("mtpd_", "spec_")), ("mtpd_tokenizer", ("mtpd_tok_", "spec_textout_")),
    ("mtpd_json", ("json_",))])
def test_shared_exports_public_calls_only(installed, lib, prefixes):
    _, _, libdir = installed
    r = subprocess.run(["nm", "-D", "--defined-only",
                        os.path.join(libdir, f"lib{lib}.so")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("nm not available")
    names = [ln.split()[-1] for ln in r.stdout.splitlines()
             if ln.split()[-2:-1] in (["T"], ["D"], ["B"], ["R"])]
    assert names, r.stdout
    assert [n for n in names if not n.startswith(prefixes)] == []
    if lib == "mtpd":
        assert "mtpd_model_load" in names and "spec_step" in names


@pytest.mark.parametrize("header", PUBLIC)
def test_public_header_self_contained(installed, tmp_path, header):
    # only the installed directory on the include path: a public header
    # that includes an internal one (kernels.h, model_int.h...) fails here
    prefix, _, _ = installed
    src = tmp_path / "h.c"
    src.write_text(f"#include <mtpd/{header}>\n#include <mtpd/{header}>\n"
                   "int main(void) { return 0; }\n")
    r = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only",
                        "-I", os.path.join(prefix, "include"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_program_against_installed_library(installed, tmp_path, static):
    _, _, libdir = installed
    src = tmp_path / "prog.c"
    src.write_text(PROG)
    flags = pkg_config(installed, "--cflags", "--libs",
                       *(["--static"] if static else []),
                       "mtpd", "mtpd-tokenizer")
    exe = str(tmp_path / "prog")
    if static:
        # the archives by path, then what they need (pkg-config --static)
        libs = [os.path.join(libdir, f"lib{n}.a")
                for n in ["mtpd_tokenizer", "mtpd", "mtpd_json"]]
        flags = [f for f in flags if not f.startswith("-lmtpd")]
        cmd = ["cc", "-std=c11", str(src), "-o", exe, *libs, *flags]
    else:
        cmd = ["cc", "-std=c11", str(src), "-o", exe, *flags]
    # the libraries are not where they were installed for (the destdir):
    # LD_LIBRARY_PATH lets ld find libmtpd_json.so.0, which libmtpd.so needs
    env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    env.pop("MTPD_ISA", None)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, " ".join(cmd) + "\n" + r.stderr
    r = subprocess.run([exe, MODEL], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", f"the library printed: {r.stderr!r}"
    out = json.loads(r.stdout)
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    assert out["rc"] == 0
    assert out["layers"] == cfg["num_hidden_layers"]
    assert out["n_ids"] >= cfg["vocab_size"] - 64 and out["n_ids"] > 0
    assert out["logit0"] != 0.0
    assert out["log_lines"] >= 2  # the load's lines went to the callback
    assert out["finish"] == "length"
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True,
                         env=env).stdout
    assert ("libmtpd.so" in ldd) == (not static), ldd
