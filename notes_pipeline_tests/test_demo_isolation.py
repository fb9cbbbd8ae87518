"""Tests never touch the demo: after every other test, the demo's instance and data are as the
session found them, and `make demo`'s data step leaves the UI listing only the stage1 CIDs,
none materialized (on a fresh stack; on a used one, what was there before plus stage1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from isolation import demo_snapshot
from test_ui_browser import Webserver, _location_loaded, free_port

from devtools.synthetic.dataset import profile_sizes

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGE1_CIDS = sorted(str(cid) for cid, _ in profile_sizes("stage1"))
ASSETS = ("crm_notes_raw", "normalized_notes", "cdp_notes_loaded", "validation_report")
PARTITIONS_QUERY = """
query ($group: AssetGroupSelector!) {
  assetNodes(group: $group) { assetKey { path } partitionKeys partitionStats { numMaterialized } }
}
"""
START_TIMEOUT_S = 180

pytestmark = pytest.mark.demo_untouched


def test_tests_left_the_demo_untouched(demo_before, demo_stack_env):
    assert demo_snapshot(demo_stack_env) == demo_before


def test_demo_lists_only_stage1_cids_none_materialized(
    demo_before, demo_stack_env, pre_stack_environ, tmp_path
):
    # the caller's own environment (its stack port offset or directory included), not the tests'
    caller_env = dict(pre_stack_environ)
    subprocess.run(["make", "demo-data"], cwd=REPO_ROOT, env=caller_env, check=True, timeout=900)
    port = free_port()
    log_path = tmp_path / "webserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
            ],
            cwd=REPO_ROOT,
            env={**caller_env, **demo_stack_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = Webserver(base_url=f"http://127.0.0.1:{port}", pid=proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _location_loaded(server.base_url):
            assert proc.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.25)
        group = {
            "groupName": "notes_migration",
            "repositoryName": "__repository__",
            "repositoryLocationName": "notes_pipeline.definitions",
        }
        nodes = server.graphql(PARTITIONS_QUERY, {"group": group})["assetNodes"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    # "absent": the demo's instance had no tables yet (a fresh stack) - nothing registered
    keys_before = demo_before.get("dagster.partition_keys")
    materialized_before = demo_before.get("dagster.materialized")
    keys_before = [] if keys_before in (None, "absent") else keys_before
    materialized_before = {} if materialized_before in (None, "absent") else materialized_before
    expected_keys = sorted(set(keys_before) | set(STAGE1_CIDS))
    by_asset = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(ASSETS) <= set(by_asset)
    for name in ASSETS:
        assert sorted(by_asset[name]["partitionKeys"]) == expected_keys, name
        before = materialized_before.get(f'["{name}"]', 0)
        assert by_asset[name]["partitionStats"]["numMaterialized"] == before, name
