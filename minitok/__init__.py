"""minitok: how images become tokens, and tokens become images.

One module per concept, in the order the lessons build them:

    data         the bundled digits (scikit-learn), and a learner's own image folder
    quantize     Lesson 01: nearest-code lookup, quantizing a feature map, k-means, usage
    course       seeds, devices and the switches the notebooks read (fast, strict)
    checks       the learner checks each lesson calls after an exercise
    assign       builds the exercise notebooks in lessons/ from solutions/
"""

__version__ = "0.1.0"
