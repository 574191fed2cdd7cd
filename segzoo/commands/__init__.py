"""Subcommands of the ``segzoo`` console script that are not LightningCLI verbs (e.g. ``segzoo segment``)."""
