"""Profiles: the [agent] table, paths, and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pibridge.agent import AgentSettings, ProvisioningMode
from pibridge.profile import ProfileError, load_profile


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def test_agent_table_with_paths_relative_to_the_profile(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _write(tmp_path, '[agent]\nhost = "127.0.0.1"\nport = 28884\nprovision_port = 28883\n'
                            'ca_file = "~/ca.crt"\ncert_folder = "certs"\nclient_name = "green house"\n'
                            'provisioning = "smart"\n\n[[sensor]]\ndriver = "bme280"\n')
    profile = load_profile(path)
    assert profile.agent == AgentSettings(host="127.0.0.1", port=28884, provision_port=28883,
                                          ca_file=tmp_path / "home" / "ca.crt",
                                          cert_folder=tmp_path / "certs",
                                          client_name="green house", provisioning=ProvisioningMode.SMART)
    assert profile.document["sensor"] == [{"driver": "bme280"}]  # left for later issues


def test_missing_agent_table_gives_the_real_agents_defaults(tmp_path: Path) -> None:
    assert load_profile(_write(tmp_path, "[other]\nx = 1\n")).agent == AgentSettings()


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    ('[agent]\nhost = "h"\nport = "18884"\n', 3, "agent.port", "integer"),
    ('[agent]\nport = 70000\n', 2, "agent.port", "between"),
    ('# c\n[agent]\n\nhots = "h"\n', 4, "agent.hots", "unknown key"),
    ('[agent]\nprovisioning = "override"\n', 2, "agent.provisioning", "pibridge provision --override"),
    ('[agent]\nprovisioning = "always"\n', 2, "agent.provisioning", '"keep" or "smart"'),
    ('[x]\nport = 1\n[agent]\n"client_name" = ""\n', 4, "agent.client_name", "non-empty"),
    ('agent.port = true\n', 1, "agent.port", "integer"),
])
def test_semantic_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                                fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    error = caught.value
    assert (error.path, error.line, error.key) == (path, line, key)
    assert str(path) in str(error) and f"line {line}" in str(error) and key in str(error)
    assert fragment in str(error)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[agent]\nhost = "h"\nport = = 3\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.line == 3 and str(path) in str(caught.value) and "line 3" in str(caught.value)


def test_unreadable_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
