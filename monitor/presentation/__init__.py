"""What people read: ``status`` text, the decision memo of ``report``, and the one
formatting module (numbers, intervals, times) they and the command line share.

Nothing is imported here: the memo's plots import matplotlib only when a report is written.
"""
