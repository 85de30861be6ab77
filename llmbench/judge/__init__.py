"""Judge: the stored results, their history, comparisons and reports.

Reads what measure stored; never imports measure, never imports torch.
"""
