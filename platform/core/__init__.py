"""Building blocks every domain uses; imports no domain."""
