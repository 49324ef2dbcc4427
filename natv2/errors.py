"""Errors a user can fix. The CLI prints their message as one line and exits with code 2."""


class UserError(ValueError):
    """Bad input from the user (config, path, file); the message names the value and what is valid."""
