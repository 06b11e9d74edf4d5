"""The label workflows an operator runs by hand: ``calibrate`` (fit and activate a
stream's calibrator), ``audit`` (transport audit of a probe slice, pooling, the next step),
``plan`` (a label budget) and ``baseline`` (a stream's score drift baseline).

Nothing is imported here: the fits import scipy, which ``--help`` does not wait for.
"""
