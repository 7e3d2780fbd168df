"""``python -m gateway`` runs the ``mcpgw`` command."""

from gateway.cli import main

main()
