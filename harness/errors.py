class UserError(Exception):
    """Bad input from the user: printed as one line that says what to do, never as a traceback."""
