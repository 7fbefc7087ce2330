"""vCenter credentials: csi-vsphere.conf and GOVC_* parsing, precedence, and that the password
never shows in a repr, a str or an error message."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubectl_csi_migrate.errors import CredentialsError, PermanentError
from kubectl_csi_migrate.vsphere.credentials import (
    VCenterConfig,
    from_govc_env,
    parse_csi_vsphere_conf,
    resolve,
)

SECRET = 's3cr;et#pa"ss\\word'
SECRET_SOURCE = "secret vmware-system-csi/vsphere-config-secret"

CSI_CONF = """\
[Global]
cluster-id = "user-cluster-1"
insecure-flag = "true"
port = "8443"

[VirtualCenter "vc1.example.com"]
user = "administrator@vsphere.local"
password = "s3cr;et#pa\\"ss\\\\word"
datacenters = "DC-A, DC-B"
"""


def test_csi_conf_global_defaults_and_virtualcenter_override() -> None:
    config = parse_csi_vsphere_conf(CSI_CONF, SECRET_SOURCE)
    assert config.host == "vc1.example.com"
    assert config.port == 8443
    assert config.user == "administrator@vsphere.local"
    assert config.password == SECRET
    assert config.insecure is True
    assert config.datacenters == ("DC-A", "DC-B")
    assert config.source == SECRET_SOURCE
    assert config.notes == ()


def test_csi_conf_section_overrides_global_per_key() -> None:
    text = (
        '[Global]\nuser = "global-user"\npassword = "global-pw"\nport = "443"\n'
        'insecure-flag = "false"\nca-file = "/etc/vmware/ca.pem"\n'
        '[VirtualCenter "10.0.0.5"]\nuser = "vc-user"\nport = "10443"\n'
    )
    config = parse_csi_vsphere_conf(text, "f")
    assert (config.host, config.port, config.user, config.password) == (
        "10.0.0.5",
        10443,
        "vc-user",
        "global-pw",
    )
    assert config.insecure is False
    assert config.ca_file == "/etc/vmware/ca.pem"


def test_csi_conf_several_vcenters_takes_first_and_notes_it() -> None:
    text = '[VirtualCenter "vc-b"]\nuser = "b"\npassword = "pb"\n[VirtualCenter "vc-a"]\nuser = "a"\npassword = "pa"\n'
    config = parse_csi_vsphere_conf(text, "f")
    assert (config.host, config.user) == ("vc-b", "b")
    assert len(config.notes) == 1 and "vc-b" in config.notes[0] and "vc-a" in config.notes[0]
    chosen = parse_csi_vsphere_conf(text, "f", host="VC-A")
    assert (chosen.host, chosen.user, chosen.password) == ("vc-a", "a", "pa")


def test_csi_conf_gcfg_syntax() -> None:
    text = (
        "; a comment\n# another\n"
        "[global]\n"
        "  user = plain-user   ; trailing comment\n"
        'password = "with spaces "  "and ; hash #" \n'
        "insecure-flag\n"  # a bare name is true in gcfg
        '[virtualcenter "vc"]\n'
        'thumbprint = "AA:BB"\n'
        "DataCenters = dc1,dc2\n"
    )
    config = parse_csi_vsphere_conf(text, "f")
    assert config.user == "plain-user"
    assert config.password == "with spaces   and ; hash #"  # inner blanks kept, as in git
    assert config.insecure is True
    assert config.thumbprint == "AA:BB"
    assert config.datacenters == ("dc1", "dc2")


def test_csi_conf_old_cloud_provider_workspace() -> None:
    text = '[Global]\nuser = "u"\npassword = "p"\n[Workspace]\nserver = "vc.old"\ndatacenter = "DC"\n'
    config = parse_csi_vsphere_conf(text, "f")
    assert (config.host, config.datacenters) == ("vc.old", ("DC",))


def test_workspace_credentials_stay_with_their_own_vcenter() -> None:
    """[Global] credentials of a legacy file belong to its [Workspace] server: never sent to
    another vCenter chosen elsewhere (issue 9, item 12)."""
    text = '[Global]\nuser = "u"\npassword = "p"\n[Workspace]\nserver = "vc.old"\n'
    with pytest.raises(CredentialsError, match="no vCenter password"):
        resolve({}, None, {"GOVC_URL": "https://vc.new/sdk", "GOVC_USERNAME": "someone"}, lambda: (text, "s"))
    same = resolve({}, None, {"GOVC_URL": "https://vc.old/sdk"}, lambda: (text, "s"))
    assert (same.host, same.user, same.password) == ("vc.old", "u", "p")


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ('[Global]\nuser = "u"\npassword = "hunter2-pw"\n', "VirtualCenter"),
        ('[VirtualCenter "vc"]\nuser = "u"\n', "password"),
        ('[VirtualCenter "vc"]\npassword = "hunter2-pw"\n', "user"),
    ],
)
def test_csi_conf_missing_fields_name_source_and_field(text: str, missing: str) -> None:
    with pytest.raises(PermanentError) as info:
        parse_csi_vsphere_conf(text, SECRET_SOURCE)
    message = str(info.value)
    assert SECRET_SOURCE in message and missing in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "text",
    [
        '[VirtualCenter "vc"]\nuser = "u"\npassword = "hunter2-pw\n',  # unclosed quote
        '[VirtualCenter "vc"]\nuser = "u"\npassword = "hunter2\\q"\n',  # bad escape
        'password = "hunter2-pw"\n',  # outside a section
        '[VirtualCenter "vc"\npassword = "hunter2-pw"\n',
        '[VirtualCenter "vc"]\n!hunter2-pw = x\n',
        '[VirtualCenter "vc"]\nuser = "u"\npassword = "hunter2"\nport = "hunter2"\n',
    ],
)
def test_csi_conf_syntax_errors_never_echo_values(text: str) -> None:
    with pytest.raises(CredentialsError) as info:
        parse_csi_vsphere_conf(text, "f")
    assert str(info.value).startswith("f:")
    assert "hunter2-pw" not in str(info.value)


def test_port_error_may_show_the_port_but_not_the_password() -> None:
    text = '[VirtualCenter "vc"]\nuser = "u"\npassword = "hunter2-pw"\nport = "http"\n'
    with pytest.raises(CredentialsError, match="'http' is not a port") as info:
        parse_csi_vsphere_conf(text, "f")
    assert "hunter2" not in str(info.value)


# --- GOVC_* ------------------------------------------------------------------------------------


def test_govc_env_absent() -> None:
    assert from_govc_env({}) is None
    assert from_govc_env({"GOVC_USERNAME": "u", "GOVC_PASSWORD": "p"}) is None


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("vc.example.com", "vc.example.com", 443),
        ("vc.example.com:8443", "vc.example.com", 8443),
        ("https://vc.example.com/sdk", "vc.example.com", 443),
        ("https://127.0.0.1:35945/sdk", "127.0.0.1", 35945),
        ("https://[fd00::1]:9443/sdk", "fd00::1", 9443),
    ],
)
def test_govc_url_forms(url: str, host: str, port: int) -> None:
    config = from_govc_env({"GOVC_URL": url, "GOVC_USERNAME": "u", "GOVC_PASSWORD": "p"})
    assert config is not None
    assert (config.host, config.port, config.user, config.password) == (host, port, "u", "p")
    assert config.source == "GOVC_* environment"
    assert config.insecure is False


def test_govc_url_userinfo_is_percent_decoded_and_env_overrides_it() -> None:
    url = "https://administrator%40vsphere.local:p%40ss%3Aw%2Frd@vc/sdk"
    config = from_govc_env({"GOVC_URL": url})
    assert config is not None
    assert (config.user, config.password) == ("administrator@vsphere.local", "p@ss:w/rd")
    override = from_govc_env({"GOVC_URL": url, "GOVC_USERNAME": "other", "GOVC_PASSWORD": "pw"})
    assert override is not None and (override.user, override.password) == ("other", "pw")


def test_govc_env_options() -> None:
    config = from_govc_env(
        {
            "GOVC_URL": "vc",
            "GOVC_INSECURE": "1",
            "GOVC_DATACENTER": "DC0",
            "GOVC_TLS_CA_CERTS": "/tmp/ca.pem",
        }
    )
    assert config is not None
    assert config.insecure is True
    assert config.datacenters == ("DC0",)
    assert config.ca_file == "/tmp/ca.pem"
    assert (config.user, config.password) == ("", "")
    for value, expected in (("true", True), ("TRUE", True), ("0", False), ("false", False)):
        parsed = from_govc_env({"GOVC_URL": "vc", "GOVC_INSECURE": value})
        assert parsed is not None and parsed.insecure is expected


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GOVC_URL": "http://u:hunter2-pw@vc/sdk"}, "https"),
        ({"GOVC_URL": "https://u:hunter2-pw@vc:99999/sdk"}, "GOVC_URL"),
        ({"GOVC_URL": "https://u:hunter2-pw@/sdk"}, "no host"),
        ({"GOVC_URL": "vc", "GOVC_INSECURE": "maybe"}, "GOVC_INSECURE"),
    ],
)
def test_govc_env_errors_never_echo_the_url(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(CredentialsError) as info:
        from_govc_env(env)
    assert fragment in str(info.value)
    assert "hunter2" not in str(info.value)


# --- resolve -----------------------------------------------------------------------------------


def no_secret() -> tuple[str, str] | None:
    raise AssertionError("the secret must not be read when other sources are complete")


class Loader:
    def __init__(self, result: tuple[str, str] | None) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> tuple[str, str] | None:
        self.calls += 1
        return self.result


GOVC = {
    "GOVC_URL": "https://vc1.example.com/sdk",
    "GOVC_USERNAME": "govc-user",
    "GOVC_PASSWORD": "govc-pw",
    "GOVC_DATACENTER": "DC-GOVC",
}


def test_resolve_flags_beat_file_beat_env_beat_secret(tmp_path: Path) -> None:
    conf = tmp_path / "csi-vsphere.conf"
    conf.write_text('[VirtualCenter "vc1.example.com"]\nuser = "file-user"\nport = "7443"\n')
    config = resolve(
        {"server": None, "user": None, "password": "flag-pw", "datacenter": ""},
        str(conf),
        GOVC,
        no_secret,
    )
    assert config.host == "vc1.example.com"
    assert config.port == 7443  # the file; GOVC_URL gives no port
    assert config.user == "file-user"
    assert config.password == "flag-pw"
    assert config.datacenters == ("DC-GOVC",)
    assert config.source == f"--vsphere-* flags, --vsphere-config {conf}, GOVC_* environment"


def test_resolve_reads_the_secret_only_when_needed() -> None:
    loader = Loader((CSI_CONF, SECRET_SOURCE))
    config = resolve({}, None, {}, loader)
    assert loader.calls == 1
    assert (config.host, config.user, config.password) == (
        "vc1.example.com",
        "administrator@vsphere.local",
        SECRET,
    )
    assert config.source == SECRET_SOURCE

    loader = Loader((CSI_CONF, SECRET_SOURCE))
    config = resolve({}, None, GOVC, loader)
    assert loader.calls == 0
    assert config.user == "govc-user" and config.source == "GOVC_* environment"

    loader = Loader((CSI_CONF, SECRET_SOURCE))
    config = resolve({"user": "flag-user"}, None, {}, loader)
    assert loader.calls == 1
    assert (config.user, config.password) == ("flag-user", SECRET)
    assert config.source == f"--vsphere-* flags, {SECRET_SOURCE}"


def test_resolve_never_sends_credentials_meant_for_another_vcenter() -> None:
    loader = Loader((CSI_CONF, SECRET_SOURCE))
    with pytest.raises(CredentialsError) as info:
        resolve({"server": "vc2.example.com"}, None, GOVC, loader)
    message = str(info.value)
    assert "vc2.example.com" in message and "password" in message
    assert "another vCenter" in message
    assert SECRET not in message and "govc-pw" not in message

    config = resolve({"server": "vc2.example.com", "password": "pw2", "user": "u2"}, None, GOVC, no_secret)
    assert (config.host, config.user, config.password) == ("vc2.example.com", "u2", "pw2")
    assert config.datacenters == ()
    assert any("GOVC" in note and "vc1.example.com" in note for note in config.notes)


def test_resolve_server_flag_picks_matching_section_of_the_secret() -> None:
    text = '[VirtualCenter "vc-a"]\nuser = "a"\npassword = "pa"\n[VirtualCenter "vc-b"]\nuser = "b"\npassword = "pb"\n'
    config = resolve({"server": "https://vc-b:9443/sdk"}, None, {}, Loader((text, "s")))
    assert (config.host, config.port, config.user, config.password) == ("vc-b", 9443, "b", "pb")


def test_resolve_tls_settings_come_from_one_source(tmp_path: Path) -> None:
    secret = Loader(('[VirtualCenter "vc"]\ninsecure-flag = "true"\n', SECRET_SOURCE))
    config = resolve(
        {"server": "vc", "user": "u", "password": "p", "ca_file": "/ca.pem"},
        None,
        {},
        secret,
    )
    assert (config.insecure, config.ca_file) == (False, "/ca.pem")

    config = resolve(
        {"server": "vc", "user": "u", "password": "p", "insecure": "true"},
        None,
        {"GOVC_TLS_CA_CERTS": "/ca.pem"},
        no_secret,
    )
    assert (config.insecure, config.ca_file) == (True, None)

    config = resolve({"user": "u", "password": "p"}, None, {}, secret)
    assert (config.host, config.insecure) == ("vc", True)


def test_resolve_flag_values() -> None:
    config = resolve(
        {
            "server": "vc:1443",
            "port": "2443",
            "user": "u",
            "password": "p",
            "insecure": "false",
            "datacenter": "DC1",
        },
        None,
        {},
        no_secret,
    )
    assert (config.host, config.port, config.insecure, config.datacenters) == (
        "vc",
        2443,
        False,
        ("DC1",),
    )
    with pytest.raises(CredentialsError, match="--vsphere-port"):
        resolve({"server": "vc", "port": "x", "user": "u", "password": "p"}, None, {}, no_secret)


def test_resolve_nothing_found_lists_what_was_tried() -> None:
    loader = Loader(None)
    with pytest.raises(CredentialsError) as info:
        resolve({"password": "hunter2-pw"}, None, {}, loader)
    message = str(info.value)
    assert loader.calls == 1
    assert "no vCenter host, user" in message
    for tried in ("--vsphere-* flags", "--vsphere-config", "GOVC_* environment", "Secret"):
        assert tried in message
    assert "hunter2" not in message


def test_resolve_unreadable_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(CredentialsError, match=r"--vsphere-config .*nope.conf: cannot read"):
        resolve({}, str(missing), {}, no_secret)


# --- never show the password -------------------------------------------------------------------


def test_repr_and_str_hide_the_password() -> None:
    config = VCenterConfig(host="vc", user="u", password=SECRET, source="test")
    for text in (repr(config), str(config), f"{config}", f"{config!r}", repr([config])):
        assert SECRET not in text and "s3cr" not in text
    assert "<hidden>" in repr(config)
    assert str(config) == "u@vc:443 (from test)"
    assert VCenterConfig(host="::1", port=9443, user="u", password="").address == "[::1]:9443"


def test_config_is_frozen() -> None:
    config = VCenterConfig(host="vc", user="u", password="p")
    with pytest.raises(AttributeError):
        config.password = "x"  # type: ignore[misc]


def test_resolve_boolean_insecure_flag_false_means_not_given() -> None:
    secret = Loader(('[VirtualCenter "vc"]\nuser = "u"\npassword = "p"\ninsecure-flag = "true"\n', "s"))
    flags: dict[str, object] = {"insecure": False, "port": None}
    config = resolve(flags, None, {}, secret)  # type: ignore[arg-type]
    assert config.insecure is True
    flags = {"insecure": True, "port": 8443}
    config = resolve(flags, None, {}, secret)  # type: ignore[arg-type]
    assert (config.insecure, config.port) == (True, 8443)
