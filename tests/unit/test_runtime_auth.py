"""Joining Ray's token authentication from a fresh shell, and a token file only its owner reads (no Ray started)."""

import json
import os
import stat

import pytest

from mlray import runtime
from mlray.spec import PlatformSpec


@pytest.fixture
def token_file(tmp_path, monkeypatch):
    path = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    return path


def test_a_new_token_file_is_written_for_its_owner_only(token_file):
    runtime.protect_token_file()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token_file.read_text()) >= 32


def test_a_token_file_left_readable_by_all_is_closed_and_kept(token_file):
    token_file.parent.mkdir(parents=True)
    token_file.write_text("an-existing-token")
    token_file.chmod(0o644)
    runtime.protect_token_file()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text() == "an-existing-token"


def test_no_token_file_when_authentication_is_disabled(token_file, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    runtime.protect_token_file()
    assert not token_file.exists()


def test_a_fresh_shell_joining_an_embedded_ray_in_token_mode_uses_the_token(tmp_path, token_file):
    platform = PlatformSpec(state_dir=str(tmp_path))
    (tmp_path / runtime.ADDRESS_FILE).write_text(json.dumps({"address": "127.0.0.1:6379", "pid": os.getpid(),
                                                             "auth_mode": "token"}))
    assert runtime.embedded_address(platform) == "127.0.0.1:6379"
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_an_embedded_ray_whose_process_is_gone_is_not_joined(tmp_path, token_file):
    platform = PlatformSpec(state_dir=str(tmp_path))
    (tmp_path / runtime.ADDRESS_FILE).write_text(json.dumps({"address": "127.0.0.1:6379", "pid": 2 ** 22 + 7,
                                                             "auth_mode": "token"}))
    assert runtime.embedded_address(platform) is None
    assert "RAY_AUTH_MODE" not in os.environ
