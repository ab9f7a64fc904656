"""One exception type whose message is the single line a user sees."""


class DraftwiseError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""
