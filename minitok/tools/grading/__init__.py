"""`minitok grade`'s machinery: the learner's code and the judge never share a process.

    main process      tools/grade.py: reads the submissions (submission.py), scores 0 what
                      needs no run, builds the units (submission, exercise), writes the reports
    supervisor        judge.py: a child subreaper that starts the judges and hands out units
    judges (--jobs)   judge.py: run each check's test function with the learner's function
                      replaced by a proxy (remote.py); never execute learner code
    zygote            zygote.py, inside bubblewrap when it works (sandbox.py): a warm process
                      per exercise (a copy of minitok without the exercise's solution), forked
                      from one per judge that imports torch once
    worker            zygote.py + server.py: forked per (submission, exercise), limited and
                      isolated; runs the learner's definitions and answers the judge's calls
    the wire          wire.py: judge -> worker pickles of the judge's own inputs; worker ->
                      judge plain data only, decoded strictly, size-capped

docs/instructors.md states what this guarantees, with and without the sandbox.
"""

# A submission that uses minitok's own solution of an exercise: the copy of minitok a worker
# imports raises NotImplementedError(SENTINEL + name) there (sandbox.build_library), and the
# judge turns that into a failed exercise with this hint (remote.rebuild_error).
SENTINEL = "minitok grader: hidden reference "
REFERENCE_HINT = "write the exercise yourself: the grader scores your code, not minitok's."
