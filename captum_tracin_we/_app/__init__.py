r"""The command-line jobs (``explain``, ``demo``) and their reports."""
