"""The command line: argv in, a call into the engine and an exit code out."""
