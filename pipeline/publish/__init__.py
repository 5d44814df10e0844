"""Pushing artifacts: the git runner and step 8's push."""
