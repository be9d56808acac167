"""Static checks of the roll-out playbooks: ansible-lint (production profile) and ansible-playbook --syntax-check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "hub" / "ansible"
VENV_BIN = Path(sys.executable).parent
PLAYBOOKS = ["deploy_edge.yml", "update_models.yml", "rollback.yml", "facts.yml"]
ENV = {
    **os.environ,
    "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
    "NO_COLOR": "1",
    "ANSIBLE_NOCOLOR": "1",
}


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", playbook],
        cwd=ANSIBLE_DIR,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env={**ENV, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]


def test_no_plaintext_secret_in_the_example_inventory() -> None:
    inventory = ANSIBLE_DIR / "inventories" / "example"
    loaded = [p for p in inventory.rglob("*") if p.is_file() and p.suffix in {".yml", ".yaml", ".json", ""}]
    for path in loaded:
        text = path.read_text()
        assert "vault_edge_api_key:" not in text or text.startswith("$ANSIBLE_VAULT"), path
        assert "ansible_password" not in text and "ansible_ssh_pass" not in text, path
