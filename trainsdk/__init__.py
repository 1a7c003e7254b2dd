"""trainsdk: training half of the SDK."""
