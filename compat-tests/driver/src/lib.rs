//! Placeholder until the driver lands in this commit series.
