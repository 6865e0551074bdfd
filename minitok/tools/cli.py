"""The `minitok` command (also `python -m minitok`): env, assign, workspace, progress, export,
demo, grade, train, shapes."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def _repo_root(command: str) -> Path:
    """The course's top folder: the one holding solutions/ (the current folder or above).

    assign, workspace and progress read the course's notebooks with nbformat (the `lab`
    extra): where either is missing, one line says what is needed instead of a traceback.
    """
    if importlib.util.find_spec("nbformat") is None:
        raise SystemExit(f"minitok {command}: needs nbformat, which comes with the lab extra: "
                         f"pip install 'minitok[lab]' (or `make setup` in the course folder)")
    here = Path.cwd().resolve()
    for folder in [here, *here.parents]:
        if (folder / "solutions").is_dir():
            return folder
    raise SystemExit(f"minitok {command}: run this inside the course folder, a clone of the "
                     f"minitok repository (no solutions/ folder here or above {here})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # its parser lives in minitok.tools.trainer (which imports torch)
        from minitok.tools.trainer import main as train

        return train(argv[1:])
    parser = argparse.ArgumentParser(prog="minitok", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("env", help="check that this setup can run the course (OK/FAIL per line)")

    p_assign = sub.add_parser("assign", help="build lessons/ from solutions/")
    p_assign.add_argument("--check", action="store_true", help="fail if lessons/ is stale")
    p_assign.add_argument("--force", action="store_true",
                          help="rebuild a lesson even if it holds a learner's work (a backup "
                               "is kept beside it)")
    p_assign.add_argument("--normalize", action="store_true",
                          help="give solutions/ nbgrader's answer and test cells and nbval's "
                               "cell tags, then run assign again to rebuild lessons/")

    p_work = sub.add_parser("workspace", help="copy lessons/ into workspace/ (never overwriting)")
    p_work.add_argument("--folder", default="workspace", help="default: workspace")
    p_prog = sub.add_parser("progress", help="exercises passed in each workspace notebook")
    p_prog.add_argument("--folder", default="workspace", help="default: workspace")
    p_prog.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"))

    p_export = sub.add_parser("export", help="write your passed exercises into a package of "
                                             "your own (one module per lesson)")
    p_export.add_argument("folder", type=Path, nargs="?", default=Path("workspace"),
                          help="your notebooks (default: workspace)")
    p_export.add_argument("--out", type=Path, default=Path("mytok"),
                          help="the package folder to write (default: mytok)")
    p_export.add_argument("--force", action="store_true",
                          help="if --out exists, move it aside to <out>.old-N first")
    p_export.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"))

    p_demo = sub.add_parser("demo", help="run the pipeline on the bundled digits")
    p_demo.add_argument("--out", type=Path, default=Path("out"),
                        help="folder for demo.png and demo_samples.pt (default: out)")
    p_demo.add_argument("--seed", type=int, default=0, help="makes the run repeatable (default 0)")
    p_demo.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p_demo.add_argument("--quick", action="store_true",
                        help="3 samples per class instead of 20 (and tiny --train runs), for tests")
    p_demo.add_argument("--yours", type=Path, default=None, metavar="PACKAGE",
                        help="the capstone: train and run the pipeline on your package "
                             "(minitok export), side by side with the shipped one")
    p_demo.add_argument("--train", type=Path, default=None, metavar="DIR",
                        help="train every model from scratch (a few minutes), save them in DIR "
                             "and use them instead of the shipped checkpoints")

    p_grade = sub.add_parser("grade", help="score submitted lesson notebooks per exercise")
    p_grade.add_argument("submissions", nargs="+", type=Path, help="the .ipynb files to grade")
    p_grade.add_argument("--json", type=Path, default=None, help="also write a JSON report here")
    p_grade.add_argument("--csv", type=Path, default=None,
                         help="also write a gradebook CSV here (a row per student and lesson, a "
                              "column per exercise)")
    p_grade.add_argument("--timeout", type=float, default=60.0,
                         help="CPU seconds per exercise and submission (default 60); waiting is "
                              "bounded by a wall-clock backstop")
    p_grade.add_argument("--jobs", type=int, default=None,
                         help="exercises graded at once (default: the number of CPU cores)")
    p_grade.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"),
                         help="run workers inside bubblewrap: auto (default: when it works "
                              "here), bwrap (required) or none (process limits only)")

    sub.add_parser("train", help="train a tokenizer, AR prior or MaskGIT on an image folder, on "
                                 "one CPU, one GPU or many (minitok train --help)")

    p_shapes = sub.add_parser("shapes", help="write synthetic coloured shapes (PNG) to train on")
    p_shapes.add_argument("folder", type=Path, help="where to write them")
    p_shapes.add_argument("--n", type=int, default=2000, help="how many images (default 2000)")
    p_shapes.add_argument("--size", type=int, default=32, help="pixels per side (default 32)")
    p_shapes.add_argument("--seed", type=int, default=0, help="the same seed, the same images")
    p_shapes.add_argument("--classes", action="store_true",
                          help="one subfolder per shape (circle, square, triangle): 3 classes")

    args = parser.parse_args(argv)
    if args.command == "env":
        from minitok.tools.env import run

        return run()
    if args.command == "assign":
        root = _repo_root(args.command)
        from minitok.tools.assign import AssignError, assign, normalize_solutions

        try:
            if args.normalize:
                return normalize_solutions(root)
            return assign(root, check=args.check, force=args.force)
        except AssignError as err:
            print(f"assign: {err}", file=sys.stderr)
            return 2
    if args.command in ("workspace", "progress"):
        root = _repo_root(args.command)
        from minitok.tools import workspace

        if args.command == "workspace":
            return workspace.make_workspace(root, args.folder)
        try:
            return workspace.progress(root, args.folder, args.sandbox)
        except ValueError as err:  # the sandbox cannot start: one line, not a traceback
            print(f"progress: {err}", file=sys.stderr)
            return 2
    if args.command == "export":
        from minitok.tools.export import export

        try:
            return export(args.folder, args.out, args.force, args.sandbox)
        except (FileExistsError, ValueError) as err:  # --out taken; the sandbox cannot start
            print(f"minitok export: {err}", file=sys.stderr)
            return 2
    if args.command == "demo" and args.yours is not None:
        from minitok.tools.capstone import run_capstone

        return run_capstone(args.yours, out=args.out, seed=args.seed, quick=args.quick,
                            device=args.device, train=args.train)
    if args.command == "demo":
        from minitok.tools.demo import run_demo

        return run_demo(out=args.out, seed=args.seed, device=args.device, quick=args.quick,
                        train=args.train)
    if args.command == "grade":
        from minitok.tools.grade import grade

        try:
            return grade(args.submissions, json_path=args.json, csv_path=args.csv,
                         timeout=args.timeout, jobs=args.jobs, sandbox=args.sandbox)
        except ValueError as err:
            print(f"grade: {err}", file=sys.stderr)
            return 2
    if args.command == "shapes":
        from minitok.data import make_shapes

        make_shapes(args.folder, args.n, args.size, args.seed, args.classes)
        print(f"wrote {args.n} images of {args.size} px to {args.folder}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
