"""The demo stage: every stage end to end on a synthetic world, with a markdown report."""
