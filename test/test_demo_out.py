"""`tools.demo --out DIR` never deletes a folder the demo did not make.
In: folders under tmp_path (with and without the demo's marker). Out: assertions; the demo's
rendering and replay are never started (its step runner is replaced by one that fails).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flashocc_ros.tools import demo


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cmd: list[str], what: str) -> None:
        raise AssertionError(f"the demo started: {what}")

    monkeypatch.setattr(demo, "_run", refuse)


def _error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_existing_folder_the_demo_did_not_make_is_refused_and_kept(
    tmp_path: Path, no_run: None, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "results"
    (out / "thesis").mkdir(parents=True)
    (out / "thesis" / "chapter1.tex").write_text("months of work")
    assert demo.main(["--out", str(out)]) == 2
    assert (out / "thesis" / "chapter1.tex").read_text() == "months of work"
    (line,) = _error_lines(caplog)
    assert "was not made by the demo" in line and "--force" in line and "\n" not in line


def test_a_marked_folder_with_files_the_demo_did_not_write_is_refused(
    tmp_path: Path, no_run: None, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "demo"
    demo.prepare_out(out, force=False)
    (out / "notes.txt").write_text("mine")
    assert demo.main(["--out", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "mine"
    (line,) = _error_lines(caplog)
    assert "holds files the demo did not write (notes.txt)" in line


def test_a_file_as_out_is_refused_even_with_force(tmp_path: Path, no_run: None) -> None:
    out = tmp_path / "report.pdf"
    out.write_text("not a folder")
    assert demo.main(["--out", str(out), "--force"]) == 2
    assert out.read_text() == "not a folder"


def test_the_demos_own_output_is_replaced_and_force_deletes_any_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo.prepare_out(out, force=False)  # creates it, with the marker
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]
    (out / "live" / "npz").mkdir(parents=True)
    (out / "live" / "npz" / "1.npz").write_bytes(b"old grid")
    (out / "report.txt").write_text("old report")
    demo.prepare_out(out, force=False)  # a second run: only its own entries go
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]

    empty = tmp_path / "empty"
    empty.mkdir()
    demo.prepare_out(empty, force=False)  # an empty folder is used as it is
    assert (empty / demo.MARKER).is_file()

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.csv").write_text("1,2")
    with pytest.raises(demo.OutError):
        demo.prepare_out(theirs, force=False)
    demo.prepare_out(theirs, force=True)
    assert sorted(p.name for p in theirs.iterdir()) == [demo.MARKER]
