"""notes_pipeline.instance.prewarm: what the run-worker zygote builds once for its forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, os
for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
    os.environ.pop(key, None)
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
import boto3
assert boto3.DEFAULT_SESSION is None
import notes_pipeline.instance.prewarm
from notes_pipeline.core.resources.tls import client_ssl_context
session = boto3.DEFAULT_SESSION
loader = session._session.get_component("data_loader")
print(json.dumps({
    "s3_model_cached": any("load_service_model" in key and "s3" in key for key in loader._cache),
    "credentials_resolved": session._session._credentials is not None,
    "tls_contexts": client_ssl_context.cache_info().currsize,
    "same_context": client_ssl_context() is client_ssl_context(),
}))
"""


def test_the_zygote_preloads_prewarm():
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_launcher"]["config"]
    assert "notes_pipeline.instance.prewarm" in config["preload_modules"]


def test_prewarm_loads_the_s3_model_and_tls_contexts_without_credentials():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.splitlines()[-1]) == {
        "s3_model_cached": True,
        "credentials_resolved": False,
        "tls_contexts": 2,
        "same_context": True,
    }


def test_a_cache_that_cannot_be_built_does_not_stop_the_zygote():
    """SSL_CERT_FILE naming a missing file, an unparsable AWS config: the zygote still starts
    (an import error would fail every launch); the runs that need the cache fail as before."""
    probe = (
        "import notes_pipeline.instance.prewarm\n"
        "from notes_pipeline.core.resources.tls import client_ssl_context\n"
        "try:\n"
        "    client_ssl_context()\n"
        "except FileNotFoundError:\n"
        "    print('run still fails')\n"
    )
    env = {
        **os.environ,
        "SSL_CERT_FILE": "/nonexistent/ca.pem",
        "AWS_CONFIG_FILE": str(REPO_ROOT / "pyproject.toml"),  # not an INI file
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "run still fails"
    assert "prewarm: TLS context not built (FileNotFoundError" in result.stderr
    assert "prewarm: boto3 S3 model not built (ConfigParseError" in result.stderr
