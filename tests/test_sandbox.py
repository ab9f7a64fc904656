"""The sandbox for generated code: limits, no writes outside its directory, no network."""

import socket
import time

import pytest

from draftwise.errors import DraftwiseError
from draftwise.quality.sandbox import Limits, network_namespace, run_program

FAST = Limits(wall_s=5, cpu_s=2, memory_mb=256)


def test_passing_and_failing_programs():
    assert run_program("assert sorted([3, 1, 2]) == [1, 2, 3]\nprint('ok')", FAST).passed
    out = run_program("def f(x):\n    return x + 1\nassert f(1) == 3, 'f(1) is wrong'", FAST)
    assert (out.status, out.detail) == ("failed", "AssertionError: f(1) is wrong")


def test_infinite_loop_is_killed_by_the_cpu_limit():
    t0 = time.perf_counter()
    out = run_program("while True:\n    pass", FAST)
    assert out.status == "timeout" and "CPU" in out.detail
    assert time.perf_counter() - t0 < 4


def test_sleeper_is_killed_by_the_wall_limit():
    t0 = time.perf_counter()
    out = run_program("import time\ntime.sleep(60)", Limits(wall_s=1, cpu_s=2, memory_mb=256))
    assert out.status == "timeout" and "wall" in out.detail
    assert time.perf_counter() - t0 < 3


def test_memory_hog_is_stopped():
    out = run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", FAST)
    assert out.status == "out_of_memory"
    # the same allocation within the limit passes: it is the limit that stops the hog
    assert run_program("b = bytearray(10**7)", FAST).passed


def test_no_write_outside_the_temporary_directory(tmp_path):
    target = tmp_path / "escaped.txt"
    for code in (f"open({str(target)!r}, 'w').write('x')",
                 f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
                 f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))",
                 f"import shutil\nshutil.copyfile('program.py', {str(target)!r})",
                 f"import os\nos.system('touch {target}')",
                 f"import subprocess\nsubprocess.run(['touch', {str(target)!r}])"):
        out = run_program(code, FAST)
        assert out.status == "failed" and "PermissionError" in out.detail, code
        assert not target.exists(), code
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    for code in (f"import os\nos.remove({str(keep)!r})",
                 f"import os\nos.rename({str(keep)!r}, 'stolen.txt')",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})"):
        assert not run_program(code, FAST).passed, code
    assert keep.read_text() == "mine"


def test_writes_inside_its_own_directory_work_and_vanish():
    code = ("import os\nopen('scratch.txt', 'w').write('x')\nos.mkdir('d')\n"
            "os.rename('scratch.txt', 'd/s.txt')\nassert open('d/s.txt').read() == 'x'\n"
            "assert os.environ['HOME'] == os.getcwd()\nprint(os.getcwd())")
    assert run_program(code, FAST).passed


def test_network_connect_fails():
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = (f"import socket\ns = socket.socket()\ns.settimeout(2)\n"
                f"s.connect(('127.0.0.1', {port}))")
        out = run_program(code, FAST)
        assert out.status == "failed"
        with pytest.raises(TimeoutError):
            server.accept()  # nothing got through


def test_network_namespace_alone_blocks_a_connect():
    """Without the audit hook's help (a raw _socket call is still audited, so check the namespace
    from the outside): where unshare works, the child sees no usable interface."""
    if not network_namespace():
        pytest.skip("unshare -rn does not work on this machine; the audit hook alone guards")
    import subprocess

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (f"import socket; s = socket.socket(); s.settimeout(2); "
                f"s.connect(('127.0.0.1', {port}))")
        r = subprocess.run(["unshare", "-rn", "python3", "-c", code], capture_output=True)
        assert r.returncode != 0


def test_bad_limits_one_line():
    with pytest.raises(DraftwiseError, match="sandbox limits are too small"):
        Limits(memory_mb=1)
