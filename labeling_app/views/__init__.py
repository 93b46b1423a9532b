"""Page views, one module per area (auth/landing, labeler, researcher)."""
