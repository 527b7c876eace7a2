"""What every method adapter needs, in one public place (see docs/writing-a-method.md)."""
