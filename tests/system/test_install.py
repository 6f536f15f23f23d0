"""`make install PREFIX=...` and cairn.pc (issue 15): the install puts libcairn.a,
libcairn.so, include/cairn.h and lib/pkgconfig/cairn.pc (naming that prefix) under the
prefix, and a program links with nothing but what pkg-config says, both ways:

    cc app.c $(pkg-config --cflags --libs cairn)                      # libcairn.so
    cc app.c $(pkg-config --static --cflags --libs cairn)             # libcairn.a

examples/embedded.c is built both ways and run. The install runs CMake's install rules
on the build under test ($CAIRN_BUILD), as `make install` does after building, so
nothing is built again; the Makefile target is checked with `make -n`."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILD, REPO, SANITIZED, deadline_seconds

pytestmark = pytest.mark.skipif(SANITIZED, reason="a sanitizer build's libraries need its flags to link")

EXAMPLE = REPO / "examples" / "embedded.c"


def run(argv, env=None, timeout=120):
    p = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       timeout=deadline_seconds(timeout))
    assert p.returncode == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        " ".join(map(str, argv)), p.returncode, p.stdout, p.stderr)
    return p.stdout


def pkg_config(pc_dir, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc_dir))
    env.pop("PKG_CONFIG_LIBDIR", None)
    return run(["pkg-config"] + list(args) + ["cairn"], env=env).split()


def cairn_version():
    m = re.search(r'#define CAIRN_VERSION "([^"]+)"', (REPO / "include" / "cairn.h").read_text())
    return m.group(1)


def expected_row(i):
    return "row id=%d title=h\u00e9llo from C score=9.5 data=4 bytes (ca1f...) extra=NULL" % i


def build_and_run(tmp_path, name, flags, env=None):
    exe = tmp_path / name
    run(["cc", str(EXAMPLE), "-o", str(exe)] + flags)
    data = tmp_path / (name + "-data")
    out = run([str(exe), str(data)], env=env, timeout=60).splitlines()
    assert out == ["inserted row 1", expected_row(1), "1 rows"], out
    return exe


def static_flags(pc_dir):
    """pkg-config --static, with libcairn.a named as the archive: with libcairn.so beside
    it, -lcairn would pick the shared one."""
    flags = pkg_config(pc_dir, "--static", "--cflags", "--libs")
    assert flags.count("-lcairn") == 1, flags
    return ["-l:libcairn.a" if f == "-lcairn" else f for f in flags]


def needed(exe):
    return run(["ldd", str(exe)])


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    p = tmp_path_factory.mktemp("install") / "prefix"
    run(["cmake", "--install", str(BUILD), "--prefix", str(p)])
    return p


def test_make_install_runs_cmakes_install_with_the_prefix(tmp_path):
    out = run(["make", "-n", "-C", str(REPO), "install", "PREFIX=%s" % (tmp_path / "p"),
               "BUILD=%s" % BUILD])
    assert re.search(r'cmake --install %s --prefix "?%s"?' % (re.escape(str(BUILD)), re.escape(str(tmp_path / "p"))),
                     out), out


def test_install_puts_the_library_header_and_pc_file_under_the_prefix(prefix):
    for rel in ("lib/libcairn.a", "lib/libcairn.so", "include/cairn.h", "lib/pkgconfig/cairn.pc"):
        assert (prefix / rel).is_file(), "%s missing; installed: %s" % (
            rel, sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*")))
    assert os.path.realpath(prefix / "lib/libcairn.so").startswith(str(prefix / "lib")), "dangling libcairn.so"
    assert (prefix / "include/cairn.h").read_bytes() == (REPO / "include/cairn.h").read_bytes()
    pc = (prefix / "lib/pkgconfig/cairn.pc").read_text()
    assert "prefix=%s\n" % prefix in pc, pc
    assert "@" not in pc, pc
    pcdir = prefix / "lib/pkgconfig"
    assert pkg_config(pcdir, "--modversion") == [cairn_version()]
    assert pkg_config(pcdir, "--variable=libdir") == [str(prefix / "lib")]
    assert pkg_config(pcdir, "--libs") == ["-L%s" % (prefix / "lib"), "-lcairn"]
    # What libcairn.a needs beyond -lcairn: the libraries whose symbols it uses (the
    # README's old line lacked zlib and libcurl: undefined deflate*, curl_*).
    libs = pkg_config(pcdir, "--static", "--libs")
    for lib in ("-lsqlite3", "-lraft", "-luv", "-lmicrohttpd", "-ljansson", "-lxxhash", "-lzstd", "-llz4", "-lz",
                "-lcurl", "-lm"):
        assert lib in libs, (lib, libs)


def test_the_embedded_example_links_with_the_shared_library(prefix, tmp_path):
    flags = pkg_config(prefix / "lib/pkgconfig", "--cflags", "--libs")
    env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    exe = build_and_run(tmp_path, "shared", flags, env=env)
    deps = run(["ldd", str(exe)], env=env)
    assert re.search(r"libcairn\.so\.0 => %s" % re.escape(str(prefix / "lib")), deps), deps


def test_the_embedded_example_links_with_the_static_library(prefix, tmp_path):
    exe = build_and_run(tmp_path, "static", static_flags(prefix / "lib/pkgconfig"))
    assert "libcairn" not in needed(exe), needed(exe)


def test_the_build_tree_has_its_own_pc_file(tmp_path):
    """build/cairn.pc describes the build tree: link with it without installing."""
    assert pkg_config(BUILD, "--variable=libdir") == [str(BUILD)]
    exe = build_and_run(tmp_path, "tree", static_flags(BUILD))
    assert "libcairn" not in needed(exe)


def test_destdir_stages_the_install_without_changing_the_prefix(tmp_path):
    stage = tmp_path / "stage"
    run(["cmake", "--install", str(BUILD), "--prefix", "/opt/cairn-test"],
        env=dict(os.environ, DESTDIR=str(stage)))
    pc = (stage / "opt/cairn-test/lib/pkgconfig/cairn.pc").read_text()
    assert "prefix=/opt/cairn-test\n" in pc, pc
    assert (stage / "opt/cairn-test/lib/libcairn.a").is_file()
    assert not os.path.exists("/opt/cairn-test")
    shutil.rmtree(stage)
