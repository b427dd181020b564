"""The one exception users see: a single line saying what is wrong and how to fix it."""


class DdadError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback.

    Raise it with a message that names the file, key or URL involved and what to do about it.
    """
