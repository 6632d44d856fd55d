"""`kubeflower`: validate, render and run FederatedTrainingJobs, and print the CRD.

User mistakes end in a message naming the field and the fix, and exit code 1; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from kubeflower.core.validation import JobInvalid, load_documents, parse_job


class _NoAliases(yaml.SafeDumper):
    """Plain YAML: repeated sub-objects are written out, not as &anchors a reader must chase."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def dump_all(documents: Sequence[object]) -> str:
    return yaml.dump_all(documents, Dumper=_NoAliases, sort_keys=False)


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            documents = load_documents(path)
        except JobInvalid as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        for index, document in enumerate(documents):
            try:
                job = parse_job(document)
            except JobInvalid as exc:
                failed = True
                print(f"{path} (document {index + 1}, job {exc.name}): invalid", file=sys.stderr)
                for error in exc.errors:
                    print(f"  {error}", file=sys.stderr)
            else:
                print(f"{path} (document {index + 1}): job {job.metadata.name} is valid")
    return 1 if failed else 0


def _render(args: argparse.Namespace) -> int:
    from kubeflower_operator.reconcile import desired_children
    from kubeflower_operator.settings import Settings

    settings = Settings.from_env()
    rendered: list[object] = []
    for document in load_documents(args.file):
        job = parse_job(document)
        if job.metadata.namespace is None:
            job.metadata.namespace = args.namespace
        rendered.extend(desired_children(job, settings))
    print(dump_all(rendered), end="")
    return 0


def _crd(args: argparse.Namespace) -> int:
    from kubeflower.core.crd import crd

    print(dump_all([crd()]), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    from kubeflower.local import run_job

    return run_job(args.file, args.output, resume=args.resume)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubeflower", description="Federated learning jobs (Flower) on Kubernetes.")
    commands = top.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check jobs against the schema and the cross-field rules")
    validate.add_argument("files", nargs="+", type=Path, help="YAML files (multi-document allowed; - for stdin)")
    validate.set_defaults(handler=_validate)

    render = commands.add_parser("render", help="print the objects the operator would create for the jobs")
    render.add_argument("file", type=Path)
    render.add_argument("--namespace", "-n", default="default", help="namespace of jobs that name none")
    render.set_defaults(handler=_render)

    crd = commands.add_parser("crd", help="print the FederatedTrainingJob CustomResourceDefinition")
    crd.set_defaults(handler=_crd)

    run = commands.add_parser("run", help="run a job locally as processes, with live progress")
    run.add_argument("file", type=Path)
    run.add_argument("--output", "-o", type=Path, default=None, help="results folder (default: ./runs/<job>)")
    run.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue the run interrupted in the output folder after its last checkpoint (a finished run is only "
            "reported); without it a run starts over and clears the folder's results and checkpoints"
        ),
    )
    run.set_defaults(handler=_run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except JobInvalid as exc:
        print(f"job {exc.name} is invalid:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"kubeflower: {exc.filename}: no such file", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
