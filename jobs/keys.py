"""Add or revoke an API key of the running service on a cluster, by its hash or fingerprint only (neither is secret:
the Jobs API and the dashboard show a job's command line).

    mlray keys hash --file my.key                      # on your machine: prints sha256:…
    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/keys.py --spec mlray.yaml add sha256:…
    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/keys.py --spec mlray.yaml revoke sha256:1a2b3c4d
    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/keys.py --spec mlray.yaml list

Exit codes: 0 done, 2 user error (a malformed hash, a fingerprint that names no key or several).
"""

import re
import sys

from mlray.entrypoint import DONE, exit_with, job_parser, run_job

HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def keys(spec, args):
    from mlray.errors import UserError
    from mlray.serve import control
    from mlray.serve.auth import fingerprint
    from mlray.serve.deploy import change_keys

    if args.action == "add":
        if not args.name or not HASH.match(args.name):
            raise UserError("add takes a key's hash, 'sha256:' and 64 hex digits (`mlray keys hash` prints one)")
        state = change_keys(spec, [args.name], [], "keys-job")
    elif args.action == "revoke":
        state = change_keys(spec, [], [args.name or ""], "keys-job")
    else:
        state = control.client(spec).snapshot()
    return {"keys": sorted(fingerprint(h) for h in state["keys"] or []), "revision": state["revision"]}, DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("action", choices=("add", "revoke", "list"))
    parser.add_argument("name", nargs="?", help="add: the key's hash; revoke: its hash or fingerprint.")
    return run_job(parser, keys, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
