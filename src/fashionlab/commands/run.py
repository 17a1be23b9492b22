"""``fashionlab run``: the whole study into one run directory and one PDF."""

from __future__ import annotations

import argparse
import dataclasses

from . import LazyText


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "run",
        parents=[common],
        help="run the whole study (all stages, then report.pdf)",
        description="Run every stage in order — He-init checks, tuning, retraining, the variant, "
        "the loss landscape, the autoencoder — then build report.pdf. Finished stages with the "
        "same configuration are reused; a killed run resumes where it stopped.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small subsets, few trials, short runs: a smoke test of every stage",
    )
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        default=None,
        help="per-stage settings: one TOML table per stage, e.g. [tune] n_trials = 40",
    )
    parser.add_argument(
        "--force",
        metavar="STAGE",
        action="append",
        default=[],
        help="redo STAGE and everything that depends on it (repeatable; "
        "'all': every stage); the old folders are kept as STAGE.previous",
    )
    parser.add_argument(
        "--only",
        metavar="STAGE",
        action="append",
        default=None,
        help="run only STAGE (repeatable); its dependencies must have run",
    )
    parser.add_argument(
        "--author",
        metavar="NAME",
        action="append",
        default=None,
        help="an author named on the report's cover (repeatable, in order; default: the "
        "[report] authors of --config, else `git config user.name`, else none)",
    )
    jobs = parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="independent stages run at once, one CPU thread each (default: %(jobs_default)s on "
        "this machine); results do not depend on it",
    )
    jobs.jobs_default = LazyText(_default_jobs)  # type: ignore[attr-defined]
    parser.set_defaults(func=_run)


def _default_jobs() -> str:
    from fashionlab.pipeline.workers import default_jobs

    return str(default_jobs())


def _run(args: argparse.Namespace) -> int:
    from fashionlab.atomic import read_json
    from fashionlab.commands import run_dir
    from fashionlab.pipeline import load_study_config, run_study
    from fashionlab.runtime import seed_everything
    from fashionlab.validation import check_parallel

    study = load_study_config(
        args.config, seed=args.seed, device=args.device, quick=args.quick, data_dir=args.data_dir
    )
    if args.author:
        report = {**study.stage_overrides("report"), "authors": list(args.author)}
        study = dataclasses.replace(study, overrides={**study.overrides, "report": report})
    seed_everything(args.seed)
    out = run_dir(args) if args.out or not args.quick else run_dir(args).with_name("quick")
    if args.jobs is not None:
        check_parallel("--jobs", args.jobs)
    outcomes = run_study(
        out,
        study,
        force=args.force,
        only=args.only,
        progress=not args.no_progress,
        jobs=args.jobs,
        wait=args.wait,
    )
    print()
    print(f"{'stage':<14}{'status':<8}{'seconds':>9}  result")
    for outcome in outcomes:
        headline = outcome.summary.get("headline", "")
        print(f"{outcome.name:<14}{outcome.status:<8}{outcome.seconds:>9.1f}  {headline}")
    total = sum(o.seconds for o in outcomes)
    print(f"{'total':<14}{'':<8}{total:>9.1f}")
    unit = (read_json(out / "run.json").get("calibration") or {}).get("seconds")
    if unit:
        print(
            f"\n{total:,.0f} s = {total / unit:,.0f} calibration units of {unit:.2f} s "
            f"(run.json's calibration: a fixed workload timed on this machine)"
        )
    report = out / "report.pdf"
    if report.is_file():
        print(f"\nreport: {report}")
    return 0
