"""The lock file ``serve`` holds for its address, where the temporary folder is unusable."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from appliance.runtime import address
from tests.support.server import free_port


def test_no_usable_temporary_folder_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only root without a writable /tmp: tempfile finds no folder it can write.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list", lambda: [str(blocked / "tmp")])
    port = free_port()
    with pytest.raises(address.AddressError) as refused:
        address.claim("127.0.0.1", port)
    message = str(refused.value)
    assert message.startswith(f"cannot hold 127.0.0.1:{port}: No usable temporary directory")
    assert message.endswith("set TMPDIR to a writable folder for its lock file")
