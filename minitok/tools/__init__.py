"""The course's machinery, behind the lessons: the `minitok` command and what it runs.

    cli        the `minitok` command (also `python -m minitok`)
    env        `minitok env`: is this setup able to run the course?
    assign     builds the exercise notebooks in lessons/ from solutions/
    workspace  `make lab`'s own copy of the lessons, never overwritten; `minitok progress`
    grade      `minitok grade`: scores submitted notebooks (grading/: the judge, sandboxed
               workers, the wire between them)
    demo       `minitok demo`: the whole pipeline as one picture and one table
    trainer    `minitok train`: the models on your own image folder
    bench      `python -m minitok.bench`: every benchmark in one run, one Markdown table

No lesson module or check (minitok/checks/) imports from here.
"""
