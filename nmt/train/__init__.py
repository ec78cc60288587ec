"""Training: loss, schedules, monitoring, validation and the loop that drives them (nmt.train.trainer)."""
