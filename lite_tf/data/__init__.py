"""Episode sources. Data never imports learners."""
