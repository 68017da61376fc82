"""The ``megfm`` command line: one module per subcommand (``megfm.cli._<name>``)."""
