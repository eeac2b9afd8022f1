"""One module per command, each with ``main(command, values) -> exit code``.

``maildiag.cli`` parses the command line against the option declarations (``maildiag.options``)
and hands a command its checked values; the command runs the pipeline, prints with a renderer
and returns the exit code. A command raises ``UsageError`` for bad input; it never prints an
error line of its own (the CLI's error shell does).
"""
