"""``runstate auth``: tokens and the hashes the identity file keeps."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from runstate.cli import app
from runstate.identity import FileDirectory, Principal, hash_token

runner = CliRunner()


def test_new_token_prints_a_token_and_the_hash_that_authenticates_it() -> None:
    result = runner.invoke(app, ["auth", "new-token"])
    assert result.exit_code == 0, result.output
    token = re.search(r"token:\s+(\S+)", result.output)
    digest = re.search(r"token_sha256:\s+(sha256:[0-9a-f]{64})", result.output)
    assert token is not None and digest is not None
    directory = FileDirectory([(Principal("x"), digest.group(1))])
    assert directory.authenticate(token.group(1)) == Principal("x")
    other = runner.invoke(app, ["auth", "new-token"]).output
    assert token.group(1) not in other


def test_hash_token_reads_stdin() -> None:
    result = runner.invoke(app, ["auth", "hash-token"], input="s3cret-token\n")
    assert (result.exit_code, result.output.strip()) == (0, hash_token("s3cret-token"))
    empty = runner.invoke(app, ["auth", "hash-token"], input="\n")
    assert empty.exit_code == 2 and "no token on stdin" in empty.output
