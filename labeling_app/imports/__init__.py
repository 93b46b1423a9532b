"""Import files: the line formats researchers upload, read and checked before any write."""
