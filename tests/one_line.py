"""The check every bad-input test makes: the command failed with exit 2 and one ``harness: error:`` line, no traceback."""


def one_line(code: int, err: str, *says: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("harness: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in says:
        assert text in lines[0], lines[0]
