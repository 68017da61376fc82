"""Helper of the CLI tests: the one error line a known failure must print."""

from __future__ import annotations


def one_error_line(err: str) -> str:
    """Return the single ``megfm COMMAND: error: ...`` line of a command's stderr.

    Fails on a traceback or on more than one error line. Warnings that libraries print
    (Lightning's, when pytest does not capture them) are not error lines.
    """
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("megfm ")]
    assert len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]
