"""The progressive rollout: start a challenger's canary (and follow it to its verdict with --wait), or pause,
resume, promote, roll back, or read its status.

    ray job submit --working-dir . -- python jobs/canary.py --spec mlray.yaml start challenger --wait 3600

Exit codes: 0 done (with --wait: promoted), 1 with --wait: rolled back, stopped or not ended in time,
2 user error.
"""

import sys

from mlray.entrypoint import CHECK_FAILED, DONE, exit_with, job_parser, run_job

ACTIONS = ("start", "status", "pause", "resume", "promote", "rollback")


def canary(spec, args):
    from mlray.audit import default_actor
    from mlray.registry.models import Registry
    from mlray.rollout import controller

    rollout = controller.client(spec)
    if args.action == "start":
        state = rollout.start(args.version, actor=default_actor())
    elif args.action == "status":
        state = rollout.status()
    elif args.action in ("promote", "rollback"):
        change = rollout.promote if args.action == "promote" else rollout.rollback
        state = change(args.reason or f"{args.action} by job", actor=default_actor())
    else:
        state = (rollout.pause if args.action == "pause" else rollout.resume)(actor=default_actor())
    if args.wait is None or state is None:
        return {"rollout": state}, DONE
    version = state["challenger"] if args.action != "start" else Registry(spec).resolve(args.version)[1]
    ended = rollout.wait_for_verdict(version, args.wait)
    return {"rollout": ended or rollout.status()}, DONE if ended and ended["status"] == "promoted" else CHECK_FAILED


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("version", nargs="?", default="challenger", help="start: the challenger version or alias.")
    parser.add_argument("--reason", help="promote/rollback: why, for the audit log.")
    parser.add_argument("--wait", type=float, metavar="SECONDS", help="Follow the rollout until it ends, at most this long.")
    return run_job(parser, canary, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
