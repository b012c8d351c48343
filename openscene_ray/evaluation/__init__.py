"""Zero-shot evaluation: metrics, predictions, figures and point-cloud outputs (pure cores), plus
the Ray evaluation job. Import the submodules directly; this package stays light for the CLI."""
