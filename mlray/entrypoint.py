"""What every `ray job submit` entrypoint in jobs/ shares: `--spec`, logs a person reads in `ray job logs`, one JSON
summary on stdout, and the exit codes 0 done, 1 a gate or check failed, 2 a user error.

    ray job submit --working-dir . -- python jobs/train.py --spec mlray.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from mlray.errors import UserError
from mlray.runtime import connect, leave
from mlray.spec import ProjectSpec, load_spec

DONE, CHECK_FAILED = 0, 1
log = logging.getLogger("mlray.job")

# a job's work: (spec, parsed arguments) -> (summary, exit code)
Work = Callable[[ProjectSpec, argparse.Namespace], tuple[dict, int]]


def job_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the job's docstring and which takes `--spec` (a wrong flag exits 2)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    parser.add_argument("--spec", help="Project spec (default: $MLRAY_SPEC or ./mlray.yaml).")
    return parser


def spec_of(args: argparse.Namespace) -> ProjectSpec:
    return load_spec(args.spec)


def run_job(parser: argparse.ArgumentParser, work: Work, argv: list[str] | None = None,
            load: Callable[[argparse.Namespace], ProjectSpec] = spec_of) -> int:
    """Parse, load the spec, join the cluster (or start an embedded Ray), run `work`, print its summary as JSON."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        spec = load(args)
        log.info("project %s (spec %s)", spec.name, spec.path or "as stored")
        connect(spec.platform)
        summary, code = work(spec, args)
    except UserError as exc:
        log.error("user error: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary, indent=2, default=str), flush=True)
    log.info("done: exit code %d", code)
    return code


def exit_with(code: int) -> None:
    """End a job process with `code` (past deltalake's native abort at exit, see `runtime.leave`)."""
    leave(code)
