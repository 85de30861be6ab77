"""How a case's ranks are started, timed out and cleaned up.

Every launcher gives the runner a :class:`~llmbench.measure.launch.base.CaseProcess`: one
process group that holds every rank of the case, so a timeout or Ctrl-C can
kill the whole case with one signal and leave nothing behind.
"""
