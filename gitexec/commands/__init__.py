"""One module per command family; each function returns the command's exit code."""
