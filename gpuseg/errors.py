"""The one exception type that gpuseg raises for bad input or bad options."""


class GpusegError(ValueError):
    """A problem with the user's input or options.

    The message is a single line that names the problem and what is allowed;
    the CLI prints it as is and exits non-zero, without a traceback.
    """
