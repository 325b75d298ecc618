"""The one exception type for input a user can fix.

The command line prints these as a single line (no traceback unless --debug);
everything else is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Bad input: a file, key or value the user named. The message names it."""
