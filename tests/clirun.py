"""Run the storscan console entry point in-process and return (exit code, stdout, stderr)."""

from __future__ import annotations

import io
import sys

import pytest

from storscan.cli import main


def run_cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str = "",
    terminal: bool = False,
) -> tuple[int, str, str]:
    """``storscan ARGS`` through ``main()``: the real error-to-exit-code mapping."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["storscan", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr("storscan.cli.console._stdin_is_terminal", lambda: terminal)
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err
