"""GitHub App authentication against the simulator, which verifies the RS256 JWT."""

from __future__ import annotations

from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from simulator.github import GitHubSimulator
from tests.helpers import Exposition, run_cli, write_config
from tests.schemas import validated_simulator


def _keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _app_config(tmp_path: Path, url: str, key_file: Path) -> Path:
    path = write_config(tmp_path / "c.yaml", url, state=tmp_path / "s.db")
    config = yaml.safe_load(path.read_text())
    del config["github"]["token_env"]
    config["github"]["app"] = {
        "app_id": 123,
        "installation_id": 456,
        "private_key_file": str(key_file),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_app_installation_token_flow(tmp_path: Path) -> None:
    """The exporter signs a JWT with the App key, the simulator verifies it with the public key and
    mints an installation token, and every API request is made with that token; neither the key,
    the JWT nor the installation token appears in the output."""
    private, public = _keypair()
    key_file = tmp_path / "app.pem"
    key_file.write_text(private)
    with validated_simulator("seed", seed=2, token="unused-pat", app=(123, 456, public)) as sim:
        config = _app_config(tmp_path, sim.url, key_file)
        result = run_cli("once", "--config", str(config), "--log-level", "debug")
        assert result.returncode == 0, result.stderr
        token_requests = [
            r for r in sim.requests if r["path"] == "/app/installations/456/access_tokens"
        ]
        assert [r["status"] for r in token_requests] == [201]
        api = [r for r in sim.requests if r["path"].startswith("/repos/")]
        assert api
        assert all(r["authorized"] and r["status"] == 200 for r in api)
        assert Exposition.parse(result.stdout).total("ci_pipeline_exporter_runs_observed_total") > 0
        minted = list(sim._installation_tokens)
        output = result.stdout + result.stderr
        assert minted
        assert not any(token in output for token in minted)
        assert "BEGIN PRIVATE KEY" not in output
        assert "eyJ" not in output


def test_app_with_wrong_key_fails_cleanly(tmp_path: Path) -> None:
    """A JWT signed with another key is refused: the poll fails (exit 1), counted as an auth error."""
    private, _ = _keypair()
    _, other_public = _keypair()
    key_file = tmp_path / "app.pem"
    key_file.write_text(private)
    sim = GitHubSimulator("seed", seed=2, app=(123, 456, other_public)).start()
    try:
        result = run_cli("once", "--config", str(_app_config(tmp_path, sim.url, key_file)))
        assert result.returncode == 1
        errors = Exposition.parse(result.stdout).by(
            "ci_pipeline_exporter_poll_errors_total", "reason"
        )
        assert errors == {("auth",): 1.0}
        assert "Traceback" not in result.stderr
    finally:
        sim.stop()
