"""The README's "On one machine first" block, run as printed: a one-node Ray started with token auth by `ray start`,
then the data plane, training, an API key and the deploy as `ray job submit` jobs from the shell, then a request.

The block runs in one bash process from a folder holding this repository's `jobs/` (the README runs it from the
repository root), with a home folder of its own (its ~/.ray/auth_token) and the environment `make` made on PATH, as
`. .venv/bin/activate` puts it; nothing else is set. `ray stop` stops every Ray of the user: `make test` runs this
file on its own, after the rest of the suite, with README_CLUSTER_WALKTHROUGH=1; without it, it is skipped."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("README_CLUSTER_WALKTHROUGH") != "1",
                                 reason="its `ray stop` would stop the suite's Ray: `make test` runs it on its own")]
ROOT = Path(__file__).parents[3]
HEADING = "### On one machine first"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_readme_runs_ingest_train_and_deploy_as_jobs_on_a_ray_it_started(tmp_path):
    block = readme_block()
    assert "ray start --head" in block and "ray job submit" in block and block.strip().endswith("ray stop")
    work, home = tmp_path / "repo", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "jobs").symlink_to(ROOT / "jobs")
    (work / ".venv").symlink_to(Path(sys.prefix))  # the block activates the environment `make` made
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLRAY_"))} | {"HOME": str(home)}
    try:
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=work, env=environ,
                              capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], env=environ,
                       capture_output=True, timeout=120)
    output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # the Ray CLI's colours
    assert done.returncode == 0, output[-6000:]
    succeeded = re.findall(r"Job '(\S+)' succeeded", output)
    assert len(succeeded) == 4, output[-6000:]  # data plane, training, the key, the deploy
    assert re.search(r'"decision": "champion"', output), "the trained model became the champion"
    served, _ = json.JSONDecoder().raw_decode(output[output.index('{"rollout":'):])  # curl's answer, no newline
    assert served["rollout"]["champion"] == "1" and served["rollout"]["weights"] == {"1": 1.0}
    (version,) = served["versions"]
    assert version["lineage"]["mlray.table"] == "transactions" and version["lineage"]["mlray.ray_job_id"]
    token = home / ".ray" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().strip() not in output
    print(f"\nthe README's one-machine block: {len(succeeded)} jobs succeeded; served {served['rollout']}")
