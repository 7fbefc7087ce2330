"""The command line: argument parsing, one module per command, printers and exit codes."""
