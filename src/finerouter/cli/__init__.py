"""The ``finerouter`` command line: one sub-command per module, registered in :mod:`finerouter.cli.main`."""
