//! `make bench`'s building blocks: the peers table (Steno next to faster-whisper and
//! mlx-whisper on the same audio and weights), live sessions while file requests run
//! (`steno-bench live`), process-tree memory sampling and the chart.

pub mod chart;
pub mod live;
pub mod memory;
pub mod peers;
