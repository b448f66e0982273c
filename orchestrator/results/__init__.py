"""Where a study's results live: paths, rows and their schema, the local and object-store
filesystems, the study dataset and its lock, export, provenance. The ground floor: it imports
no other room. See docs/architecture.md."""
