"""Formatting for progress lines."""


def clock(seconds: float) -> str:
    """``m:ss`` for a duration in seconds (minutes are not wrapped into hours)."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"
