"""Issue 8: each bad input generated on the fly, with the exact behaviour Loupe must show."""
