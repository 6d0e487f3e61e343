"""SUPERLINK_TLS: on with certificates from `make certs`, off when told, loud when they are missing."""

import pytest

from cloud.settings import StackSettings
from cloud.stack.certs import make_certs
from cloud.stack.local import service_specs, superlink_tls_files


def test_unset_means_tls_exactly_when_certificates_exist(tmp_path):
    without = StackSettings(certs_dir=tmp_path / "none")
    assert superlink_tls_files(without) is None

    paths = make_certs(tmp_path / "certs")
    with_certs = StackSettings(certs_dir=tmp_path / "certs")
    command = service_specs(with_certs, tmp_path / "stack")["superlink"].command

    assert superlink_tls_files(with_certs).ca == paths.ca
    assert "--ssl-certfile" in command and "--insecure" not in command


def test_zero_turns_tls_off_even_with_certificates(tmp_path):
    make_certs(tmp_path / "certs")
    settings = StackSettings(certs_dir=tmp_path / "certs", superlink_tls=False)
    assert superlink_tls_files(settings) is None
    assert "--insecure" in service_specs(settings, tmp_path / "stack")["superlink"].command


def test_one_without_certificates_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make certs`"):
        superlink_tls_files(StackSettings(certs_dir=tmp_path / "none", superlink_tls=True))
