"""The lock file ``serve`` holds for its address: an unusable temporary folder, another
user's file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs two users: run as root, it plays both")
def test_a_lock_file_another_user_left_behind_refuses_no_one() -> None:
    # Another user's server on this address was killed (kill -9): its lock file stays in
    # the shared /tmp, owned by that user, unlocked. This user may not open it; the port
    # is free, so serve must start.
    port = free_port()
    left = address.lock_path("127.0.0.1", port)  # root's, as root's killed server left it
    left.write_text("12345")
    left.chmod(0o644)
    claim = (
        "from appliance.runtime import address\n"
        f"held = address.claim('127.0.0.1', {port})\n"
        "print('held', held.path)\n"
        "held.close()\n"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(Path(address.__file__).parents[2])}
    try:
        done = subprocess.run(
            [*nobody, sys.executable, "-c", claim],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    finally:
        left.unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("held "), done.stdout
