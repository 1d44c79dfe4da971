"""Submitting and following retraining jobs through the Ray Jobs API.

The submission id is derived from the incident (`incidents.submission_id`), so a second submission of the same
incident, from a restarted monitor or a concurrent trigger, is refused by Ray and names the job already running.
The job gets where its spec is stored under the lake root (redacted, `mlray.lake.specs`): its node need not see the
caller's files, and nothing secret travels in its submission, which the Jobs API and the dashboard show.

The monitor may run on any node, but the address the cluster records for its Jobs API is often the head's 127.0.0.1
(the launcher configs keep the dashboard there, behind token auth): unless it is given an address, the monitor calls
the Jobs API from a zero-CPU task placed on the head node, as Ray Train places its state actor.
"""

from __future__ import annotations

import logging
import shlex
import sys

from mlray.errors import UserError
from mlray.incidents import submission_id
from mlray.lake import Lake
from mlray.lake.specs import store_spec
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
HEAD_NODE = {"node:__internal_head__": 0.001}  # the resource Ray gives the head node and only the head node
HEAD_CALL_TIMEOUT_S = 60.0


def jobs_address() -> str:
    """The Jobs API (the dashboard) of the cluster this process is connected to, as the cluster records it."""
    # Ray: loaded only when the Jobs API is asked for, so importing this module (the monitor's loop does) stays Ray-free
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    found = _internal_kv_get("dashboard", namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    if not found:
        raise UserError("this Ray cluster runs no dashboard, so it has no Jobs API to submit retraining to "
                           "(start Ray with the dashboard: `ray start --head --include-dashboard=true`)")
    address = found.decode()
    return address if "://" in address else f"http://{address}"


def client(address: str | None = None):
    from ray.job_submission import JobSubmissionClient  # Ray: loaded only when a job is submitted or followed

    return JobSubmissionClient(address or jobs_address())


def retrain_entrypoint(incident_id: str, spec_uri: str) -> str:
    """The retraining job's command: the same module `jobs/retrain.py` runs, with the Python of this node."""
    return (f"{shlex.quote(sys.executable)} -m mlray.retrain --incident {shlex.quote(incident_id)} "
            f"--stored-spec {shlex.quote(spec_uri)}")


def submit_retrain(jobs, spec: ProjectSpec, incident_id: str) -> tuple[str, bool]:
    """Submit the incident's retraining job once: (submission id, whether this call submitted it)."""
    sid = submission_id(spec.name, incident_id)
    try:
        jobs.submit_job(entrypoint=retrain_entrypoint(incident_id, store_spec(Lake.from_platform(spec.platform), spec)),
                        submission_id=sid, metadata={"mlray.project": spec.name, "mlray.incident": incident_id})
        return sid, True
    except RuntimeError:
        if job_status(jobs, sid) is None:  # not a duplicate: a real failure
            raise
        log.info("retraining job %s exists already", sid)
        return sid, False


def job_status(jobs, sid: str) -> str | None:
    """The job's status ('PENDING', 'RUNNING', 'SUCCEEDED', ...) or None when there is no such job."""
    try:
        return str(jobs.get_job_info(sid).status.value)
    except RuntimeError:
        return None


def _call_jobs_api(method: str, *args, **kwargs):
    """One call of a Jobs API client of the cluster's recorded address (run on the head by `HeadJobs`)."""
    return getattr(client(), method)(*args, **kwargs)


class HeadJobs:
    """The two Jobs API calls the monitor makes, each run on the head node, where the address the cluster records
    answers whichever interface the dashboard listens on. A failure raises here as it would in process (Ray's task
    error is also the cause's type: a refused duplicate is still a RuntimeError)."""

    def __init__(self):
        import ray  # Ray: loaded only when a job is submitted or followed

        self._ray = ray
        self._call = ray.remote(_call_jobs_api).options(num_cpus=0, resources=HEAD_NODE, max_retries=0)

    def submit_job(self, **kwargs) -> str:
        return self._run("submit_job", **kwargs)

    def get_job_info(self, submission_id: str):
        return self._run("get_job_info", submission_id)

    def _run(self, method: str, *args, **kwargs):
        return self._ray.get(self._call.remote(method, *args, **kwargs), timeout=HEAD_CALL_TIMEOUT_S)


class RayJobs:
    """The monitor's `JobSubmitter`: the project's retraining jobs through the Ray Jobs API at `address`, or, when
    None, through the head node's (`HeadJobs`), so that the monitor's own node does not matter."""

    def __init__(self, spec: ProjectSpec, address: str | None = None):
        self.spec, self.address, self._client = spec, address, None

    def client(self):
        if self._client is None:
            self._client = client(self.address) if self.address else HeadJobs()
        return self._client

    def submit(self, incident_id: str) -> tuple[str, bool]:
        return submit_retrain(self.client(), self.spec, incident_id)

    def status(self, submission_id: str) -> str | None:
        return job_status(self.client(), submission_id)
