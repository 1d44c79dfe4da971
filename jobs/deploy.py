"""Serve the champion (and more versions at weight 0) behind mlray's ingress on Ray Serve; start the drift monitor
when `monitor.enabled`. The service and the monitor outlive this job: they belong to the cluster.

    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/deploy.py --spec mlray.yaml [VERSION ...]

API keys: those the control plane holds (`mlray keys add` reads a key from stdin and hands over only its hash) and the
spec's serve.api_keys hashes (`mlray keys hash` prints one). Never put a plain key in a runtime env: the Jobs API and
the dashboard show it.
Re-submitting never restarts what already serves: changed serve settings reach the running ingress (auth, limits), or
the job refuses with "restart needed" (port, replicas, placement, ...) unless --restart. Exit codes: 0 serving, 2 user
error.
"""

import sys

from mlray.entrypoint import DONE, exit_with, job_parser, run_job


def deploy(spec, args):
    from mlray.monitor import actor
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy as deploy_service

    done = deploy_service(spec, args.versions, keys=KeyRing.for_serving(spec.serve), restart=args.restart)
    if spec.monitor.enabled:
        actor.start(spec)
    return {"url": done.url, "plan": done.plan.to_dict(), "started": done.started, "settings": done.settings,
            "monitor": spec.monitor.enabled}, DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("versions", nargs="*", help="More versions or aliases to serve (at weight 0).")
    parser.add_argument("--restart", action="store_true",
                        help="Start the ingress again, for a serve setting it cannot take while it runs.")
    return run_job(parser, deploy, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
