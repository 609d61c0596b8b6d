"""Leaderboard submissions, their validation, and the built README and site."""
