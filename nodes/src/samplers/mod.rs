//! Samplers behind one trait, and sigma schedules.
