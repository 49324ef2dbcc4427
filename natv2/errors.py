"""Errors a user can fix. The CLI prints their message as one line and exits with code 2."""

#: the longest error line the CLI prints; a longer message keeps its start (what is wrong) and
#: its end (how to recover) around an ellipsis
MESSAGE_LIMIT = 300


class UserError(ValueError):
    """Bad input from the user (config, path, file); the message names the value and what is valid."""


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line (whitespace runs made one space), at most ``limit`` characters."""
    text = " ".join(str(message).split())
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[:limit - tail - 3]} … {text[-(tail - 2):]}"
