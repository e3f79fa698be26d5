//! `make bench`'s building blocks: the peers table (Steno next to faster-whisper and
//! mlx-whisper on the same audio and weights), process-tree memory sampling and the chart.

pub mod chart;
pub mod memory;
pub mod peers;
