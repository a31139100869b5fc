"""Git side of the data flow: repository → Snapshot(commit, files)."""
