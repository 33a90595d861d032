"""Parameter generation runs for minutes: it must say what it does, and keep saying it."""

import subprocess
import sys

import pytest

from damocles_py.proofs import params


def test_generation_child_reports_progress_and_duration(monkeypatch, capsys):
    monkeypatch.setattr(params, "PROGRESS_EVERY", 0.3)
    # A real child process standing in for the generator (same call shape: the size is the last argument).
    params._run_with_progress([sys.executable, "-c", "import time; time.sleep(1.2)", "2048"], {}, "PoRep parameters")
    err = capsys.readouterr().err
    assert "generating PoRep parameters (about 10 min on 2 cores" in err
    assert err.count("still generating PoRep parameters") >= 2
    assert "PoRep parameters: done in" in err


def test_generation_child_failure_is_raised(monkeypatch):
    monkeypatch.setattr(params, "PROGRESS_EVERY", 0.3)
    with pytest.raises(subprocess.CalledProcessError):
        params._run_with_progress([sys.executable, "-c", "raise SystemExit(3)", "2048"], {}, "x")
