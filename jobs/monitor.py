"""Start, stop or read the drift monitor: a detached Ray actor per project that outlives this job, checks served
traffic for drift with Alibi Detect and submits retraining jobs through the Jobs API.

    ray job submit --working-dir . -- python jobs/monitor.py --spec mlray.yaml start

Exit codes: 0 done, 2 user error.
"""

import sys

from mlray.entrypoint import DONE, exit_with, job_parser, run_job


def monitor(spec, args):
    from mlray import monitoring
    from mlray.monitor import actor

    if args.action == "start":
        monitoring.start(spec)
    elif args.action == "stop":
        return {"stopped": actor.stop(spec)}, DONE
    return {"monitor": actor.status(spec)}, DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("action", choices=("start", "status", "stop"))
    return run_job(parser, monitor, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
