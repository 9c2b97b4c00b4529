"""Label Studio: the server's lifecycle, task sync, and the simulated annotator."""
